"""A local "instance" for bootstrap tests: its own data dir, private tmux server and environment."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from job import layout
from job.runspec import DatasetSpec, RunSpec

from .conftest import REPO, child_env


def upload_run(s3, bucket: str, run: str, *, dataset: str = "photos", active: bool = True,
               train: dict | None = None) -> RunSpec:
    """What `launcher train` stores: the spec, the job package and runs/active.json."""
    spec = RunSpec(run=run, bucket=bucket, dataset=DatasetSpec(name=dataset, repo_id="local/photos"),
                   train=train or {}, nproc_per_node=1, price_per_hour={"g5.xlarge": 0.45})
    spec.upload(s3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(REPO / "job", arcname="job",
                filter=lambda info: None if "__pycache__" in info.name else info)
    s3.put_object(Bucket=bucket, Key=layout.package_key(run), Body=buf.getvalue())
    if active:
        s3.put_object(Bucket=bucket, Key=layout.active_run_key(),
                      Body=json.dumps({"run": run, "package_key": layout.package_key(run)}).encode())
    return spec


class LocalInstance:
    def __init__(self, data_dir: Path, extra_env: dict[str, str]):
        self.data_dir = data_dir
        # tmux sockets live under a short private dir (socket paths are limited to ~100 bytes)
        self.tmux_dir = Path(tempfile.mkdtemp(prefix="tmux-", dir="/tmp"))
        self.env = child_env(SPOT_DATA_DIR=str(data_dir), TMUX_TMPDIR=str(self.tmux_dir),
                             SPOT_PYTHON=sys.executable, SPOT_WATCHER_SYSTEMD="0", **extra_env)
        self.env.pop("TMUX", None)

    def bootstrap(self, bucket: str, *args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "job.bootstrap", "--bucket", bucket, *args], env=self.env,
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 1, out.stdout   # exactly one JSON line on stdout
        return json.loads(lines[0])

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", *args], env=self.env, capture_output=True, text=True, timeout=20)

    def sessions(self) -> list[str]:
        out = self.tmux("list-sessions", "-F", "#{session_name}")
        return out.stdout.split() if out.returncode == 0 else []

    def windows(self, session: str) -> list[str]:
        out = self.tmux("list-windows", "-t", f"={session}", "-F", "#{window_name}")
        return out.stdout.split() if out.returncode == 0 else []

    def close(self) -> None:
        self.tmux("kill-server")
        shutil.rmtree(self.tmux_dir, ignore_errors=True)
