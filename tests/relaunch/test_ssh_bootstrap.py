"""The replacement "instance" is a real sshd on loopback with its own empty data dir and tmux server: the
bootstrap, run over SSH as the user data / `launcher resume` would, finds the active run in moto S3, restores
the dataset shards, and the real trainer (torchrun, gloo, CPU) continues from the first instance's checkpoint.
A second bootstrap while it runs starts no second trainer; one after the run finished starts nothing."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from job import layout, paths
from job.lease import Lease
from job.records import read_state
from job.s3 import client, get_json
from job.testing.imds_server import ImdsServer
from launcher.testing.sshd import LocalSshd
from tests.train.conftest import TINY

from tests.waiting import wait_for

from .conftest import REPO, child_env
from .instance import upload_run
from .test_resume import _agent, _trainer_events, _tree

RUN = "ssh-resume"
# 1 epoch of 4 steps: instance A stops after step 2, the replacement trains steps 3..4 and finishes.
TRAIN = {**TINY, "epochs": 1, "steps_per_epoch": 4}
REPLACEMENT_ID = "i-0ccccccccccccccc3"


def _ssh_bootstrap(sshd: LocalSshd, bucket: str, *args: str) -> dict:
    remote = f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m job.bootstrap --bucket {bucket}"
    out = subprocess.run(sshd.ssh_argv(" ".join([remote, *map(shlex.quote, args)])), capture_output=True,
                         text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout   # exactly one JSON line, as the launcher parses it
    return json.loads(lines[0])


@pytest.mark.timeout(300)
def test_bootstrap_over_ssh_resumes_the_run_and_never_starts_a_second_trainer(hub_dataset, bucket, aws, tmp_path):
    s3 = client("s3")
    upload_run(s3, bucket, RUN, dataset="photos", train=TRAIN)

    # Instance A prepared and mirrored the dataset, trained two steps and stopped with a durable checkpoint.
    first = tmp_path / "a"
    prepared_a = paths.prepared_dir("photos", root=first)
    subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(hub_dataset[0]), "--out", str(prepared_a),
                    "--workers", "1", "--no-progress"], check=True, cwd=REPO, env=child_env(), capture_output=True,
                   timeout=120)
    from job.mirror import mirror

    mirror(prepared_a, bucket, layout.dataset_prefix("photos"), progress=False)
    result = _agent(first, bucket, "i-0aaaaaaaaaaaaaaa1", 2, aws.env, run=RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert get_json(s3, bucket, layout.latest_checkpoint_key(RUN))["global_step"] == 2

    # Instance B: a real sshd whose sessions see moto S3 and B's own metadata service, like user data sets.
    with ImdsServer(instance_id=REPLACEMENT_ID, instance_type="g5.xlarge", az="us-east-1c") as imds, \
            LocalSshd(env={**aws.env, **imds.env, "PYTHONPATH": str(REPO), "SPOT_WATCHER_SYSTEMD": "0"},
                      root=tmp_path / "b") as sshd:
        assert not any(sshd.data_dir.iterdir())   # nothing local: everything comes from S3
        session = paths.tmux_session(RUN)
        started = _ssh_bootstrap(sshd, bucket)     # the run is found through runs/active.json
        assert started["run"] == RUN and started["action"] == "started"
        again = _ssh_bootstrap(sshd, bucket, "--run", RUN)
        assert again["action"] == "running"
        sessions = sshd.run_as_instance("tmux", "list-sessions", "-F", "#{session_name}", capture_output=True,
                                        text=True).stdout.split()
        assert sessions == [session]

        run_dir = paths.run_dir(RUN, root=sshd.data_dir)
        agent_log = run_dir / "agent.log"
        wait_for(lambda: (read_state(s3, bucket, RUN) or {}).get("state") in ("finished", "failed"), 240,
                 "the resumed run to end", interval=0.5)
        wait_for(lambda: sshd.run_as_instance("tmux", "has-session", "-t", f"={session}",
                                              capture_output=True).returncode != 0, 30, "the session to end")
        log = agent_log.read_text()
        assert read_state(s3, bucket, RUN)["state"] == "finished", log[-3000:]

        # Dataset restored byte for byte from the S3 mirror; training continued at step 2 on this instance.
        assert _tree(paths.prepared_dir("photos", root=sshd.data_dir)) == _tree(prepared_a)
        events = _trainer_events(sshd.data_dir, run=RUN)
        data = [e for e in events if e["type"] == "agent" and e.get("step") == "data"]
        assert len(data) == 1 and data[0]["how"] == "restored" and data[0]["files_transferred"] > 0
        resumed = [e for e in events if e["type"] == "state" and e["state"] == "resuming"]
        assert len(resumed) == 1, "more than one trainer started on the replacement"
        assert resumed[0]["global_step"] == 2 and resumed[0]["instance_id"] == REPLACEMENT_ID
        assert len([e for e in events if e["type"] == "agent" and e.get("step") == "lease"]) == 1
        trainer = json.loads((run_dir / "trainer.json").read_text())
        assert trainer["state"] == "finished" and trainer["global_step"] == 4
        assert get_json(s3, bucket, layout.latest_checkpoint_key(RUN))["global_step"] == 4
        lease, _ = Lease(s3, bucket, RUN, holder="probe").read()
        assert lease["holder"] is None and REPLACEMENT_ID in lease["released_by"]

        # A finished run is never restarted.
        assert _ssh_bootstrap(sshd, bucket) == {"run": RUN, "action": "finished"}
        assert sshd.run_as_instance("tmux", "has-session", "-t", f"={session}",
                                    capture_output=True).returncode != 0
