"""Fixtures for the relaunch tests: a local IMDS per test, the contract trainer, the watcher process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from job.testing.imds_server import ImdsServer
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CONTRACT_TRAINER = Path(__file__).with_name("contract_trainer.py")


@pytest.fixture
def imds(monkeypatch):
    with ImdsServer(instance_id="i-0aaaaaaaaaaaaaaa1", instance_type="g5.xlarge", az="us-east-1b") as server:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url)
        from job import instance

        instance._base_identity.cache_clear()
        yield server
        instance._base_identity.cache_clear()


def child_env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}


class Procs:
    """Child processes a test starts; all are stopped at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=kwargs.pop("env", child_env()), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)
        self.procs.append(proc)
        return proc

    def trainer(self, run_dir: Path, bucket: str | None = None, run: str = "r1") -> subprocess.Popen:
        args = [sys.executable, str(CONTRACT_TRAINER), "--run-dir", str(run_dir), "--run", run]
        if bucket:
            args += ["--bucket", bucket]
        proc = self.start(args)
        wait_for(lambda: (run_dir / "trainer.json").exists() and
                 json.loads((run_dir / "trainer.json").read_text())["pid"] == proc.pid, 20, "the trainer to start")
        return proc

    def watcher(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.start([sys.executable, "-m", "job.watcher", *args], env=env or child_env())

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def procs():
    group = Procs()
    yield group
    group.stop_all()


def signals(run_dir: Path) -> list[dict]:
    path = run_dir / "signals.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
