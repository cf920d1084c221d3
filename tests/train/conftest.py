"""Fixtures for the trainer tests: one prepared dataset per session, run specs, torchrun launches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from job.runspec import RunSpec

REPO = Path(__file__).resolve().parents[2]

# Tiny but real: torchvision's ResNet with one block per stage on 48 px crops of the real-photo set,
# 2 processes x 16 images = global batch 32, 12 steps per epoch (the whole 396-image train split).
TINY = {"preset": "fast", "model": "resnet10", "epochs": 3, "warmup_epochs": 0.3, "global_batch": 32,
        "max_micro_batch": 16, "lr": 0.1, "resolution": 48, "workers": 0, "log_every": 1, "eval_batch": 50,
        "checkpoint_every_min": 60, "keep_checkpoints": 2}



@pytest.fixture(scope="session")
def prepared(hub_dataset, tmp_path_factory) -> Path:
    """The real-photo dataset prepared once by `python -m job.prepare` (the real command)."""
    source, _ = hub_dataset
    out = tmp_path_factory.mktemp("prepared") / "photos"
    subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(source), "--out", str(out), "--workers", "1"],
                   check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=120)
    return out


def steps_per_epoch(prepared: Path, global_batch: int = TINY["global_batch"]) -> int:
    return json.loads((prepared / "index.json").read_text())["splits"]["train"]["count"] // global_batch


def write_spec(path: Path, bucket: str, run: str | None = None, **train) -> Path:
    spec = RunSpec(run=run or f"t-{uuid.uuid4().hex[:8]}", bucket=bucket, train={**TINY, **train})
    path.parent.mkdir(parents=True, exist_ok=True)
    spec.save(path)
    return path


def trainer_env(endpoint_env: dict, **extra) -> dict:
    return {**os.environ, **endpoint_env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "AWS_EC2_METADATA_DISABLED": "true", "SPOT_INSTANCE_ID": "i-test", "SPOT_INSTANCE_TYPE": "cpu.test",
            "SPOT_AZ": "local-1a", **extra}


def torchrun_cmd(spec: Path, data: Path, run_dir: Path, nproc: int = 2, max_steps: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "job.train", "--spec", str(spec), "--data", str(data), "--run-dir", str(run_dir)]
    return cmd + (["--max-steps", str(max_steps)] if max_steps else [])


def run_trainer(spec: Path, data: Path, run_dir: Path, env: dict, nproc: int = 2, max_steps: int = 0,
                timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(torchrun_cmd(spec, data, run_dir, nproc, max_steps), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    (run_dir / "test-output.log").write_text(result.stdout + result.stderr)
    return result


def trainer_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "trainer.json").read_text())


def metrics(run_dir: Path, type_: str) -> list[dict]:
    lines = []
    for path in sorted((run_dir / "records").glob("*/metrics.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["type"] == type_]


def events(run_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((run_dir / "records").glob("*/events.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


@pytest.fixture
def endpoint_env(moto_server) -> dict:
    return dict(moto_server.env)
