"""A replacement "instance" resumes a run with the real pieces: job.prepare, job.mirror, job.agent, torchrun
job.train (gloo, CPU) against moto S3: dataset restored from the S3 mirror, checkpoint found, training continues
from the right step, lease handed over."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from job import layout, paths
from job.lease import Lease
from job.s3 import client, get_json
from tests.train.conftest import TINY

from .conftest import REPO, child_env
from .instance import upload_run

RUN = "resume-demo"


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def _agent(data_dir: Path, bucket: str, instance_id: str, max_steps: int, aws_env: dict,
           run: str = RUN) -> subprocess.CompletedProcess:
    env = child_env(SPOT_DATA_DIR=str(data_dir), SPOT_PYTHON=sys.executable, AWS_EC2_METADATA_DISABLED="true",
                    SPOT_INSTANCE_ID=instance_id, SPOT_INSTANCE_TYPE="g5.xlarge", SPOT_AZ="us-east-1a",
                    OMP_NUM_THREADS="1", **aws_env)
    env.pop("AWS_EC2_METADATA_SERVICE_ENDPOINT", None)
    result = subprocess.run([sys.executable, "-m", "job.agent", "--bucket", bucket, "--run", run, "--nproc", "1",
                             "--max-steps", str(max_steps), "--lease-timeout", "60"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    (data_dir / "agent-output.log").write_text(result.stdout + result.stderr)
    return result


def _trainer_events(data_dir: Path, run: str = RUN) -> list[dict]:
    lines = []
    for path in sorted((paths.run_dir(run, root=data_dir) / "records").glob("*/events.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


@pytest.mark.timeout(300)
def test_replacement_instance_restores_dataset_and_resumes_from_checkpoint(hub_dataset, bucket, aws, tmp_path):
    s3 = client("s3")
    upload_run(s3, bucket, RUN, dataset="photos", train=TINY)
    first, second = tmp_path / "instance-a", tmp_path / "instance-b"

    # Instance A prepared the dataset and mirrored it (the data step's first-run path, done here directly).
    prepared_a = paths.prepared_dir("photos", root=first)
    subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(hub_dataset[0]), "--out", str(prepared_a),
                    "--workers", "1", "--no-progress"], check=True, cwd=REPO, env=child_env(), capture_output=True,
                   timeout=120)
    from job.mirror import mirror

    mirror(prepared_a, bucket, layout.dataset_prefix("photos"), progress=False)

    # A trains two steps, then stops with a durable checkpoint (as after a spot notice).
    result = _agent(first, bucket, "i-0aaaaaaaaaaaaaaa1", 2, aws.env)
    assert result.returncode == 0, result.stderr[-3000:]
    latest = get_json(s3, bucket, layout.latest_checkpoint_key(RUN))
    assert latest["global_step"] == 2

    # B: an empty data dir. It restores the shards from S3, takes the lease and continues at step 2.
    result = _agent(second, bucket, "i-0bbbbbbbbbbbbbbb2", 4, aws.env)
    assert result.returncode == 0, result.stderr[-3000:]
    prepared_b = paths.prepared_dir("photos", root=second)
    assert _tree(prepared_b) == _tree(prepared_a) and (prepared_b / "index.json").exists()
    events = _trainer_events(second)
    data = [e for e in events if e["type"] == "agent" and e.get("step") == "data"]
    assert data and data[0]["how"] == "restored" and data[0]["files_transferred"] > 0
    resumed = [e for e in events if e["type"] == "state" and e["state"] == "resuming"]
    assert resumed and resumed[0]["global_step"] == 2 and resumed[0]["instance_id"] == "i-0bbbbbbbbbbbbbbb2"
    trainer = json.loads((paths.run_dir(RUN, root=second) / "trainer.json").read_text())
    assert trainer["state"] == "interrupted" and trainer["global_step"] == 4
    assert get_json(s3, bucket, layout.latest_checkpoint_key(RUN))["global_step"] == 4
    lease, _ = Lease(s3, bucket, RUN, holder="probe").read()
    assert lease["holder"] is None and lease["released_by"].endswith("i-0bbbbbbbbbbbbbbb2-agent")
    timings = [e for e in events if e["type"] == "agent" and e.get("step") == "trainer exited"][0]["timings"]
    assert {"environment", "data", "lease"} <= set(timings)
