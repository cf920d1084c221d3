"""The bootstrap with real tmux (a private server per test) against moto S3 and a local IMDS."""
from __future__ import annotations

import json
import time

import pytest

from job import layout, paths
from job.lease import Lease
from job.records import RunRecords, read_state
from job.s3 import client

from tests.waiting import wait_for
from .instance import LocalInstance, upload_run


@pytest.fixture
def instance(tmp_path, imds, aws):
    node = LocalInstance(tmp_path / "data", {**imds.env, **aws.env})
    yield node
    node.close()


def _mark_data_ready(data_dir, dataset="photos"):
    """The agent's "prepared dataset already complete" state (the restore path is tested separately)."""
    prepared = paths.prepared_dir(dataset, root=data_dir)
    prepared.mkdir(parents=True)
    (prepared / "index.json").write_text("{}")
    (prepared.parent / f".{dataset}.ready.json").write_text("{}")


def test_bootstrap_twice_starts_one_session_and_finished_run_is_not_restarted(bucket, instance):
    s3 = client("s3")
    upload_run(s3, bucket, "demo")
    _mark_data_ready(instance.data_dir)
    # Another instance still trains the run: our agent must prepare, then wait at the lease.
    other = Lease(s3, bucket, "demo", holder="i-old-instance", ttl_s=600)
    assert other.acquire(wait=False)

    first = instance.bootstrap(bucket)               # finds the run through runs/active.json
    assert first["run"] == "demo" and first["action"] == "started" and first["watcher"] == "tmux"
    session = paths.tmux_session("demo")
    assert instance.windows(session) == ["agent", "watcher"]
    assert (instance.data_dir / "pkg" / "demo" / "job" / "agent.py").exists()
    agent_log = instance.data_dir / "runs" / "demo" / "agent.log"
    wait_for(lambda: agent_log.exists() and "held by i-old-instance" in agent_log.read_text(), 30,
             "the agent to wait for the old instance's lease")

    second = instance.bootstrap(bucket, "--run", "demo")
    assert second["action"] == "running"
    assert instance.sessions() == [session]
    panes = instance.tmux("list-panes", "-s", "-t", f"={session}", "-F", "#{pane_current_command}").stdout.split()
    assert len(panes) == 2
    assert read_state(s3, bucket, "demo")["state"] == "preparing"

    # The old instance finishes the run and releases the lease: the waiting agent must not train it.
    RunRecords(instance.data_dir / "old", run="demo", segment="old", bucket=bucket, s3=s3).state("finished")
    other.release()
    wait_for(lambda: instance.sessions() == [], 30, "the session to end with the agent")
    assert "finished while we waited for the lease" in agent_log.read_text()
    assert Lease(s3, bucket, "demo", holder="probe").read()[0]["holder"] is None  # released again

    third = instance.bootstrap(bucket)
    assert third == {"run": "demo", "action": "finished"}
    time.sleep(0.5)
    assert instance.sessions() == []


def test_session_without_agent_is_replaced(bucket, instance):
    s3 = client("s3")
    upload_run(s3, bucket, "stale")
    _mark_data_ready(instance.data_dir)
    other = Lease(s3, bucket, "stale", holder="i-old-instance", ttl_s=600)
    assert other.acquire(wait=False)
    session = paths.tmux_session("stale")
    # a leftover session whose agent died: only the watcher window is left
    assert instance.tmux("new-session", "-d", "-s", session, "-n", "watcher", "sleep 60").returncode == 0
    result = instance.bootstrap(bucket, "--run", "stale")
    assert result["action"] == "started"
    assert instance.windows(session) == ["agent", "watcher"]
    other.release()


def test_missing_run_gives_a_clear_error(bucket, instance):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "job.bootstrap", "--bucket", bucket], env=instance.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert json.loads(out.stdout)["action"] == "error"
    assert "launcher train" in out.stderr and layout.active_run_key() in out.stderr


def test_watcher_systemd_unit_is_valid_and_its_command_runs(imds, tmp_path):
    """The unit the bootstrap installs on AWS: systemd accepts it, and its ExecStart with its Environment= lines
    is a working watcher (it polls the metadata service named in the environment)."""
    import os
    import shlex
    import shutil
    import subprocess
    import sys

    from job.bootstrap import render_watcher_unit

    from .conftest import REPO

    run_dir = tmp_path / "runs" / "unit-run"
    run_dir.mkdir(parents=True)
    env = {**imds.env, "SPOT_WATCHER_INTERVAL": "0.2", "HF_ENDPOINT": "http://hub with space", "HOME": "/nowhere"}
    text = render_watcher_unit(bucket="b", run="unit-run", run_dir=run_dir, pkg_dir=REPO, python=sys.executable,
                               user="root", env=env)
    unit = tmp_path / "spot-watcher-unit-run.service"
    unit.write_text(text)
    assert "HOME" not in text   # only the AWS_/SPOT_/HF_ settings travel into the unit
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr

    lines = text.splitlines()
    environment = dict(word.split("=", 1) for line in lines if line.startswith("Environment=")
                       for word in shlex.split(line[len("Environment="):]))
    assert environment["HF_ENDPOINT"] == "http://hub with space"
    command = shlex.split(next(line for line in lines if line.startswith("ExecStart="))[len("ExecStart="):])
    assert command[:3] == [sys.executable, "-m", "job.watcher"] and "--run-dir" in command
    polls = lambda: imds.stats()["counts"].get("/latest/meta-data/spot/instance-action", 0)  # noqa: E731
    before = polls()
    proc = subprocess.Popen(command, cwd=REPO, env={"PATH": os.environ["PATH"], **environment},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: polls() >= before + 3, 20, "the unit's watcher to poll the metadata service")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
