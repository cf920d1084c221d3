"""Mirror a prepared dataset to S3 once, and restore it onto a replacement instance (the relaunch fast path).

    python -m job.mirror upload  --bucket B --name imagenet-1k [--dir DIR] [--concurrency 16]
    python -m job.mirror restore --bucket B --name imagenet-1k [--dir DIR] [--concurrency 16]

Objects live at s3://B/datasets/<name>/<relpath> (job.layout), each carrying its sha256 in its metadata;
`manifest.json` ({"files": {relpath: {"size", "sha256"}}}) is written last, so a mirror with a manifest is complete
and one without (an interrupted upload) is never restored from. Both directions use one boto3 TransferManager for
every file (multipart parts and files share `concurrency` threads), skip what already matches, and are safe to
re-run. A restored file lands under a temporary name and is renamed into place only after its sha256 matches.
Hidden files (the `.verified.json` checksum cache) and `*.tmp` files (a writer's temporaries) are local state
and are never mirrored.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from job import layout
from job.integrity import VerifiedFiles, ensure_free_space, human_bytes, sha256_file

MANIFEST_NAME = "manifest.json"
SHA256_METADATA = "sha256"  # S3 user metadata key (x-amz-meta-sha256)
ATTEMPTS = 2
_TMP_SUFFIX = ".restore"


class MirrorError(RuntimeError):
    """A mirror or restore that cannot go on; the message names the fix."""


def _keys(prefix: str) -> tuple[str, str]:
    """(prefix, manifest key) from layout.dataset_prefix(name) — or the bare dataset name — never built by hand."""
    name = prefix.strip("/").split("/")[-1]
    if layout.check_run_name(name) and prefix not in (name, layout.dataset_prefix(name)):
        raise MirrorError(f"{prefix!r} is not a dataset prefix: pass job.layout.dataset_prefix(name), "
                          f"e.g. {layout.dataset_prefix('imagenet-1k')!r}")
    return layout.dataset_prefix(name), layout.dataset_manifest_key(name)


def _local_files(root: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        hidden = any(part.startswith(".") for part in rel.split("/"))
        if path.is_file() and not hidden and not path.name.endswith(".tmp"):  # local state and temporaries
            files[rel] = path
    return files


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled,
                smoothing=0.1)


def _subscriber(bar):
    """A TransferManager subscriber that feeds the shared progress bar (bytes/s over all files)."""
    from s3transfer.subscribers import BaseSubscriber

    class Progress(BaseSubscriber):
        def on_progress(self, future, bytes_transferred, **kwargs):
            bar.update(bytes_transferred)  # negative when s3transfer retries a part; tqdm takes it back

    return Progress()


def _transfer_manager(s3, concurrency: int):
    from boto3.s3.transfer import create_transfer_manager

    from job.s3 import transfer_config

    return create_transfer_manager(s3, transfer_config(concurrency=concurrency))


def mirror(local_dir, bucket: str, prefix: str, s3=None, concurrency: int = 16, progress: bool = True) -> dict:
    """Upload every (non-hidden) file of local_dir to s3://bucket/<prefix> (layout.dataset_prefix), then the
    manifest. Returns {"bytes", "files_transferred", "files_skipped", "seconds", "bytes_per_s", ...}."""
    from job.s3 import client, get_json, put_json

    started = time.monotonic()
    prefix, manifest_key = _keys(prefix)
    s3 = s3 or client("s3")
    root = Path(local_dir)
    files = _local_files(root) if root.is_dir() else {}
    if not files:
        raise MirrorError(f"{root} holds no prepared files to mirror: run `python -m job.prepare` first")
    if MANIFEST_NAME in files:
        raise MirrorError(f"{root / MANIFEST_NAME} would collide with the mirror's own manifest: rename it")

    verified = VerifiedFiles(root)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        digests = dict(zip(files, pool.map(verified.sha256, files)))
    manifest = {"files": {rel: {"size": files[rel].stat().st_size, "sha256": digests[rel]} for rel in files}}

    if get_json(s3, bucket, manifest_key) == manifest:
        return _summary(0, 0, len(files), started, bucket, prefix)
    # The mirror is about to change: until the new manifest lands it is incomplete, so withdraw the old one first.
    s3.delete_object(Bucket=bucket, Key=manifest_key)

    remote_sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        remote_sizes.update({obj["Key"]: obj["Size"] for obj in page.get("Contents", [])})

    def already_there(rel: str) -> bool:
        key = prefix + rel
        if remote_sizes.get(key) != manifest["files"][rel]["size"]:
            return False
        metadata = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {})
        return metadata.get(SHA256_METADATA) == digests[rel]

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        present = dict(zip(files, pool.map(already_there, files)))
    to_upload = [rel for rel in files if not present[rel]]
    total = sum(manifest["files"][rel]["size"] for rel in to_upload)

    bar = _progress_bar(total, f"mirror to s3://{bucket}/{prefix}", progress)
    try:
        with _transfer_manager(s3, concurrency) as manager:
            futures = [
                manager.upload(str(files[rel]), bucket, prefix + rel,
                               extra_args={"Metadata": {SHA256_METADATA: digests[rel]}},
                               subscribers=[_subscriber(bar)])
                for rel in to_upload
            ]
            for future in futures:
                future.result()
    finally:
        bar.close()
    put_json(s3, bucket, manifest_key, manifest)  # last: its presence means every file above is in place
    return _summary(total, len(to_upload), len(files) - len(to_upload), started, bucket, prefix)


def _safe_relpath(rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise MirrorError(f"manifest entry {rel!r} is not a plain relative path: refusing to write outside the "
                          "dataset directory. Re-run the mirror step to rewrite the manifest.")
    return rel


def _tmp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}{_TMP_SUFFIX}")


def restore(bucket: str, prefix: str, local_dir, s3=None, concurrency: int = 16, progress: bool = True) -> dict:
    """Bring local_dir in line with the mirror at s3://bucket/<prefix> (layout.dataset_prefix): fetch what is
    missing or differs, verify each file's sha256, skip what already matches. Returns the same summary as mirror."""
    from job.s3 import client, get_json

    started = time.monotonic()
    prefix, manifest_key = _keys(prefix)
    s3 = s3 or client("s3")
    manifest = get_json(s3, bucket, manifest_key)
    if manifest is None:
        raise MirrorError(
            f"no prepared dataset mirror at s3://{bucket}/{prefix} (no {MANIFEST_NAME}, so no complete upload); "
            "run the data step first (download + prepare + `python -m job.mirror upload`)"
        )
    entries = {_safe_relpath(rel): info for rel, info in manifest.get("files", {}).items()}
    root = Path(local_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.rglob(f".*{_TMP_SUFFIX}*"):  # leftovers of a killed restore (ours and s3transfer's)
        stale.unlink()

    verified = VerifiedFiles(root)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ok = list(pool.map(lambda rel: verified.check(rel, entries[rel]["size"], entries[rel]["sha256"]), entries))
    missing = [rel for rel, good in zip(entries, ok) if not good]
    for rel in missing:  # a wrong copy must not sit where the loader looks while the right one downloads
        (root / rel).unlink(missing_ok=True)
        verified.forget(rel)
    ensure_free_space(root, sum(entries[rel]["size"] for rel in missing),
                      f"restoring {len(missing)} file(s) of s3://{bucket}/{prefix}")

    transferred_bytes = 0
    bar = _progress_bar(sum(entries[rel]["size"] for rel in missing), f"restore s3://{bucket}/{prefix}", progress)
    try:
        with _transfer_manager(s3, concurrency) as manager, ThreadPoolExecutor(max_workers=concurrency) as hashers:
            todo = missing
            for attempt in range(1, ATTEMPTS + 1):
                if not todo:
                    break
                if attempt > 1:
                    bar.total += sum(entries[rel]["size"] for rel in todo)
                    bar.refresh()
                bad = _fetch_round(manager, hashers, bucket, prefix, root, todo, entries, verified, bar)
                transferred_bytes += sum(entries[rel]["size"] for rel in todo)
                for rel, actual in bad.items():
                    print(f"{rel}: sha256 mismatch after download (expected {entries[rel]['sha256']}, got {actual})"
                          f"{'; fetching again' if attempt < ATTEMPTS else ''}", file=sys.stderr)
                todo = list(bad)
            if todo:
                raise MirrorError(
                    f"{len(todo)} file(s) of s3://{bucket}/{prefix} failed their sha256 check {ATTEMPTS} times "
                    f"({', '.join(todo[:3])}): the mirror is damaged. Re-run the mirror upload from a prepared copy, "
                    "or delete the manifest to force the data step to rebuild it."
                )
    finally:
        bar.close()
    return _summary(transferred_bytes, len(missing), len(entries) - len(missing), started, bucket, prefix)


def _fetch_round(manager, hashers, bucket, prefix, root, todo, entries, verified, bar) -> dict[str, str]:
    """Download `todo` to temporary names; move each into place once its sha256 matches. Returns the mismatches."""
    for rel in todo:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    downloads = [(rel, manager.download(bucket, prefix + rel, str(_tmp_path(root / rel)),
                                        subscribers=[_subscriber(bar)])) for rel in todo]

    def verify(rel: str) -> tuple[str, str | None]:
        tmp, dest = _tmp_path(root / rel), root / rel
        actual = sha256_file(tmp)
        if actual != entries[rel]["sha256"]:
            tmp.unlink()
            return rel, actual
        tmp.replace(dest)
        verified.record(rel, actual)
        return rel, None

    # Hash each file as soon as its download is done, while the others are still arriving.
    checks = []
    for rel, download in downloads:
        download.result()
        checks.append(hashers.submit(verify, rel))
    return {rel: actual for rel, actual in (c.result() for c in checks) if actual is not None}


def _summary(nbytes: int, transferred: int, skipped: int, started: float, bucket: str, prefix: str) -> dict:
    seconds = time.monotonic() - started
    return {"bucket": bucket, "prefix": prefix, "bytes": nbytes, "files_transferred": transferred,
            "files_skipped": skipped, "seconds": round(seconds, 3),
            "bytes_per_s": round(nbytes / seconds, 1) if seconds > 0 else 0.0}


def main(argv=None) -> int:
    from botocore.exceptions import ClientError

    from job.paths import prepared_dir

    parser = argparse.ArgumentParser(description="Mirror a prepared dataset to S3, or restore it from there.")
    parser.add_argument("action", choices=("upload", "restore"))
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--name", required=True, help="dataset name, e.g. imagenet-1k")
    parser.add_argument("--dir", default=None, help="local prepared dir (default: $SPOT_DATA_DIR/prepared/<name>)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    local = args.dir or prepared_dir(args.name)
    try:
        if args.action == "upload":
            summary = mirror(local, args.bucket, layout.dataset_prefix(args.name), concurrency=args.concurrency,
                             progress=not args.no_progress)
        else:
            summary = restore(args.bucket, layout.dataset_prefix(args.name), local, concurrency=args.concurrency,
                              progress=not args.no_progress)
    except (MirrorError, OSError, ValueError, ClientError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary["human"] = f"{human_bytes(summary['bytes'])} in {summary['seconds']:.1f}s"
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
