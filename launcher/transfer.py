"""Moving the job package and run spec: to S3 (for replacements) and over SSH (for this instance).

Both directions are idempotent: an unchanged package (same sha256) is neither re-uploaded nor re-extracted.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from job import layout
from job.runspec import RunSpec
from launcher.package import Package

SHA_METADATA = "sha256"          # x-amz-meta-sha256 on the package object
SHA_MARKER = ".package-sha256"   # in the extracted package dir on the instance


def upload_package(s3, bucket: str, run: str, package: Package) -> bool:
    """Upload with the TransferManager unless the same bytes are there; True when it uploaded."""
    from job.s3 import transfer_config

    key = layout.package_key(run)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get(SHA_METADATA) == package.sha256:
            return False
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(package.path), bucket, key, Config=transfer_config(),
                   ExtraArgs={"Metadata": {SHA_METADATA: package.sha256}, "ContentType": "application/gzip"})
    return True


def download_package(s3, bucket: str, run: str, out_dir: Path) -> Package:
    """The run's stored package (what `resume` pushes, so a resumed run keeps its original code)."""
    import hashlib

    key = layout.package_key(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "job.tar.gz"
    from job.s3 import transfer_config

    try:
        s3.download_file(bucket, key, str(path), Config=transfer_config())
    except s3.exceptions.ClientError as exc:
        from launcher.errors import LauncherError

        raise LauncherError(f"s3://{bucket}/{key} is missing: start the run with `launcher train` first") from exc
    data = path.read_bytes()
    return Package(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=())


def publish_run(s3, spec: RunSpec) -> None:
    """Spec first, then the active-run pointer, so a booting instance never finds a pointer without a spec."""
    spec.upload(s3)
    from job.s3 import put_json

    put_json(s3, spec.bucket, layout.active_run_key(), {"run": spec.run, "package_key": layout.package_key(spec.run)})


def push_package(remote, run: str, package: Package) -> bool:
    """Put the package on the instance and extract it to $SPOT_DATA_DIR/pkg/<run>; True when it changed.

    Extracts into a temporary sibling and swaps it in, so an interrupted push never leaves half a package.
    """
    pkg_dir = remote.package_dir(run)
    marker = f"{pkg_dir}/{SHA_MARKER}"
    current = remote.run(f"cat {shlex.quote(marker)} 2>/dev/null", warn=True).stdout.strip()
    if current == package.sha256:
        return False
    parent = f"{remote.data_dir}/pkg"
    remote.check(f"mkdir -p {shlex.quote(parent)}", "creating the package directory")
    upload = f"{parent}/.{run}.{package.sha256[:12]}.tar.gz"
    import paramiko

    from launcher.errors import LauncherError

    try:
        remote.conn.put(str(package.path), remote=upload)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise LauncherError(f"copying the job package to {remote.conn.host}:{upload} over SFTP failed: {exc}. "
                            "Check free space in $SPOT_DATA_DIR and that sshd offers the sftp subsystem.") from exc
    staging = f"{parent}/.{run}.staging"
    q = shlex.quote
    remote.check(
        f"set -e; rm -rf {q(staging)}; mkdir -p {q(staging)}; tar -xzf {q(upload)} -C {q(staging)}; "
        f"printf %s {package.sha256} > {q(staging)}/{SHA_MARKER}; "
        f"rm -rf {q(pkg_dir)}.old; if [ -e {q(pkg_dir)} ]; then mv {q(pkg_dir)} {q(pkg_dir)}.old; fi; "
        f"mv {q(staging)} {q(pkg_dir)}; rm -rf {q(pkg_dir)}.old {q(upload)}",
        "extracting the job package")
    return True
