"""`launcher resume`: the automatic relaunch path, by hand: bootstrap the run on the current instance.

The bootstrap restores data and the latest valid checkpoint from S3 itself; here we only make sure the
run's own package (the one in S3, not the laptop's current code) is on the instance to run it from.
"""
from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

from launcher import progress, transfer
from launcher.config import RunConfig
from launcher.deployment import Deployment
from launcher.errors import LauncherError
from launcher.remote import start_run


def resume(config: RunConfig) -> dict:
    deployment = Deployment(config)
    bucket, s3 = deployment.bucket, deployment.s3
    from job.runspec import RunSpec

    try:
        RunSpec.fetch(s3, bucket, config.name)
    except s3.exceptions.NoSuchKey:
        raise LauncherError(f"run {config.name} has no spec in s3://{bucket}: start it with `launcher train`") from None
    remote = deployment.connect()
    try:
        init = f"{remote.package_dir(config.name)}/job/__init__.py"
        if not remote.run(f"test -f {shlex.quote(init)}", warn=True).ok:
            with tempfile.TemporaryDirectory(prefix="spot-resume-") as tmp, \
                    progress.spinner(f"pushing the run's package to {remote.conn.host}"):
                pkg = transfer.download_package(s3, bucket, config.name, Path(tmp))
                transfer.push_package(remote, config.name, pkg)
            progress.done(f"package extracted at {remote.package_dir(config.name)}")
        result = start_run(remote, bucket, config.name)
        return {"run": config.name, "host": remote.conn.host, "bootstrap": result}
    finally:
        remote.conn.close()
