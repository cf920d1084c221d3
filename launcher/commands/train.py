"""`launcher train`: package → S3 (so replacements start without the laptop) → instance → bootstrap.

The Hub token goes to SSM Parameter Store only (a SecureString the instance role may read); the run spec
names the parameter. Nothing here ever sends the token over SSH, into S3 or into a remote command line.
"""
from __future__ import annotations

from job import layout
from job.runspec import DatasetSpec, RunSpec
from launcher import package, progress, transfer
from launcher.config import RunConfig, require_dataset_access
from launcher.deployment import Deployment, scratch_dir
from launcher.errors import LauncherError
from launcher.remote import start_run


def build_spec(config: RunConfig, bucket: str, *, token_parameter: str | None, prices: dict[str, float],
               previous: RunSpec | None) -> RunSpec:
    train = dict(config.train)
    nproc = train.pop("nproc_per_node", "auto")
    ds = config.dataset
    spec = RunSpec(run=config.name, bucket=bucket, region=config.region,
                   dataset=DatasetSpec(name=ds.name, repo_id=ds.repo_id, revision=ds.revision,
                                       hf_token_parameter=token_parameter),
                   train=train, nproc_per_node=nproc, price_per_hour=prices)
    if previous is not None:
        spec.created = previous.created        # re-running `train` does not make it a new run
    return spec


def _fetch_spec(s3, bucket: str, run: str) -> RunSpec | None:
    try:
        return RunSpec.fetch(s3, bucket, run)
    except s3.exceptions.NoSuchKey:
        return None


def _other_active_run(s3, bucket: str, run: str) -> str | None:
    """The bucket's active run if it is another one that has not ended."""
    from job.records import TERMINAL_STATES, read_state
    from job.s3 import get_json

    active = get_json(s3, bucket, layout.active_run_key()) or {}
    other = active.get("run")
    if not other or other == run:
        return None
    state = (read_state(s3, bucket, other) or {}).get("state")
    return None if state in TERMINAL_STATES else other


def train(config: RunConfig, *, force: bool = False) -> dict:
    deployment = Deployment(config)
    bucket, s3 = deployment.bucket, deployment.s3
    mirrored = require_dataset_access(config, s3, bucket)

    other = _other_active_run(s3, bucket, config.name)
    if other and not force:
        raise LauncherError(f"run {other!r} is the active run in s3://{bucket} and has not ended: a replacement "
                            f"instance would join it, not {config.name!r}. Let it finish, or pass --force to make "
                            f"{config.name!r} the active run.")

    progress.step("connecting to the instance")
    remote = deployment.connect()
    try:
        sessions = remote.run_sessions()
        busy = [r for r in sessions if r != config.name]
        if busy and not force:
            raise LauncherError(f"the instance {remote.conn.host} is busy with run(s) {', '.join(busy)} "
                                f"(tmux session {', '.join('spot-' + r for r in busy)}). Stop it first, use another "
                                "instance, or pass --force to start alongside.")
        if busy:
            progress.warn(f"starting alongside {', '.join(busy)} (--force)")

        progress.step("building the job package")
        pkg = package.build(scratch_dir(config.name))
        progress.done(f"package {pkg.size / 1024:.0f} KiB, {len(pkg.files)} files, sha256 {pkg.sha256[:12]}")
        with progress.spinner("uploading the package to S3"):
            uploaded = transfer.upload_package(s3, bucket, config.name, pkg)
        progress.done(f"s3://{bucket}/{layout.package_key(config.name)} " + ("uploaded" if uploaded else "unchanged"))

        token = config.dataset.token()
        token_parameter = None
        if token:
            token_parameter = config.hf_token_parameter
            deployment.aws.put_secret(token_parameter, token, f"Hugging Face Hub token of run {config.name}")
            progress.done(f"Hub token stored in SSM as SecureString {token_parameter}")
        elif mirrored:
            progress.info(f"dataset {config.dataset.name} is mirrored in the bucket: no Hub token needed")

        from botocore.exceptions import BotoCoreError, ClientError

        try:
            prices = deployment.aws.spot_prices(list(config.instance_types))
        except (BotoCoreError, ClientError) as exc:   # a price read must not block training; cost falls back
            progress.warn(f"could not read spot prices ({exc}); cost figures will use on-demand prices")
            prices = {}
        spec = build_spec(config, bucket, token_parameter=token_parameter, prices=prices,
                          previous=_fetch_spec(s3, bucket, config.name))
        transfer.publish_run(s3, spec)
        progress.done(f"run spec and {layout.active_run_key()} written")

        if config.name in sessions:
            progress.info(f"run {config.name} is already running on {remote.conn.host}: not pushing new code into it")
        else:
            with progress.spinner(f"pushing the package to {remote.conn.host}"):
                changed = transfer.push_package(remote, config.name, pkg)
            progress.done(f"package {'extracted' if changed else 'already'} at {remote.package_dir(config.name)}")
        result = start_run(remote, bucket, config.name)
        return {"run": config.name, "bucket": bucket, "host": remote.conn.host, "package_sha256": pkg.sha256,
                "hf_token_parameter": token_parameter, "bootstrap": result}
    finally:
        remote.conn.close()
