"""Replacement bootstrap -> first resumed training step, measured locally with the real pieces.

    python -m bench.bench_resume [--train-per-class 40] [--notice-trials 5 --interval 2]

Part 1 (notice latency): the real watcher against the local IMDS; a notice posted at a random moment; the
time until a child process receives SIGUSR1, compared with the poll interval (ratio < 1 = within one poll).

Instance A prepares the real-photo dataset, mirrors it to S3 (moto on loopback) and trains 2 steps (a
durable checkpoint, as after a spot notice). Instance B has an empty data dir: `python -m job.bootstrap`
starts tmux -> job.agent -> environment, dataset restore from the S3 mirror, lease, torchrun job.train
(gloo, CPU, 1 process) which loads the checkpoint and trains. The script reports where the time to B's
first resumed step went, and compares the dataset restore against the baseline the mirror replaces:
re-preparing the shards from Hub parquet already on local disk (measured in the same run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = "bench-resume"
TINY = {"preset": "fast", "model": "resnet18", "epochs": 2, "warmup_epochs": 0.5, "global_batch": 32,
        "max_micro_batch": 32, "lr": 0.2, "resolution": 64, "workers": 0, "steps_per_epoch": 4, "log_every": 1,
        "eval_batch": 50, "checkpoint_every_min": 60, "keep_checkpoints": 2}


def _events(run_dir: Path, name: str) -> list[dict]:
    lines = []
    for path in sorted((run_dir / "records").glob(f"*/{name}")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


CHILD = ("import signal, sys, time\n"
         "def on(*_):\n    print(time.time(), flush=True); sys.exit(0)\n"
         "signal.signal(signal.SIGUSR1, on)\n"
         "while True: time.sleep(1)\n")


def notice_latency(trials: int, interval: float) -> dict:
    import random

    from job.testing.imds_server import ImdsServer

    latencies = []
    for _ in range(trials):
        with ImdsServer() as server:
            child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
            watcher = subprocess.Popen([sys.executable, "-m", "job.watcher", "--pid", str(child.pid), "--interval",
                                        str(interval)], env={**os.environ, **server.env, "PYTHONPATH": str(REPO)},
                                       stderr=subprocess.DEVNULL)
            time.sleep(1.0 + random.uniform(0, interval))   # watcher up, then a notice at a random phase
            posted = server.schedule_notice(in_s=0)["visible_at"]
            received = float(child.stdout.readline())
            watcher.wait(30)
            child.wait(10)
            child.stdout.close()
            latencies.append(received - posted)
    return {"poll_interval_s": interval, "notice_to_sigusr1_s": [round(x, 3) for x in latencies],
            "max_s": round(max(latencies), 3), "max_over_interval": round(max(latencies) / interval, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--notice-trials", type=int, default=5)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    latency = notice_latency(args.notice_trials, args.interval)
    print(json.dumps(latency))

    from job import layout, paths
    from job.mirror import mirror
    from job.runspec import DatasetSpec, RunSpec
    from job.s3 import client
    from job.testing.moto_server import MotoServer, aws_env
    from job.testing.photos import make_hub_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    tmux_dir = Path(tempfile.mkdtemp(prefix="tmux-", dir="/tmp"))
    with MotoServer() as moto, aws_env(moto):
        s3 = client("s3")
        bucket = "bench-resume"
        s3.create_bucket(Bucket=bucket)
        make_hub_dataset(work / "hub", train_per_class=args.train_per_class)
        spec = RunSpec(run=RUN, bucket=bucket, dataset=DatasetSpec(name="photos", repo_id="local/photos"),
                       train=TINY, nproc_per_node=1)
        spec.upload(s3)
        import io
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(REPO / "job", arcname="job", filter=lambda i: None if "__pycache__" in i.name else i)
        s3.put_object(Bucket=bucket, Key=layout.package_key(RUN), Body=buf.getvalue())
        s3.put_object(Bucket=bucket, Key=layout.active_run_key(),
                      Body=json.dumps({"run": RUN, "package_key": layout.package_key(RUN)}).encode())

        def env_for(data_dir: Path, instance_id: str) -> dict:
            env = {**os.environ, "PYTHONPATH": str(REPO), "SPOT_DATA_DIR": str(data_dir), "SPOT_PYTHON": sys.executable,
                   "AWS_EC2_METADATA_DISABLED": "true", "SPOT_INSTANCE_ID": instance_id, "SPOT_INSTANCE_TYPE": "local",
                   "OMP_NUM_THREADS": "1", "TMUX_TMPDIR": str(tmux_dir), "SPOT_WATCHER_SYSTEMD": "0"}
            env.pop("TMUX", None)
            return env

        # Instance A: baseline prepare (timed), mirror, 2 training steps.
        first = work / "instance-a"
        prepared_a = paths.prepared_dir("photos", root=first)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(work / "hub"), "--out", str(prepared_a),
                        "--no-progress"], check=True, env=env_for(first, "i-a"), capture_output=True)
        prepare_s = time.monotonic() - started
        mirrored = mirror(prepared_a, bucket, layout.dataset_prefix("photos"), progress=False)
        subprocess.run([sys.executable, "-m", "job.agent", "--bucket", bucket, "--run", RUN, "--max-steps", "2"],
                       check=True, env=env_for(first, "i-a"), capture_output=True, cwd=REPO)

        # Instance B: the replacement, from the bootstrap on.
        second = work / "instance-b"
        env_b = env_for(second, "i-b")
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "job.bootstrap", "--bucket", bucket], env=env_b, cwd=REPO,
                             capture_output=True, text=True, check=True)
        bootstrap_s = time.time() - t0
        run_dir_b = paths.run_dir(RUN, root=second)
        deadline = time.time() + 600
        first_step = None
        while time.time() < deadline and first_step is None:
            steps = [m for m in _events(run_dir_b, "metrics.jsonl") if m["type"] == "step"]
            first_step = steps[0] if steps else None
            time.sleep(0.2)
        while subprocess.run(["tmux", "has-session", "-t", f"={paths.tmux_session(RUN)}"], env=env_b,
                             capture_output=True).returncode == 0 and time.time() < deadline:
            time.sleep(0.5)
        subprocess.run(["tmux", "kill-server"], env=env_b, capture_output=True)
        if first_step is None:
            print((run_dir_b / "agent.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit("replacement never reached a training step")
        events = _events(run_dir_b, "events.jsonl")
        timings = next(e for e in events if e.get("step") == "trainer exited")["timings"]
        data = next(e for e in events if e.get("step") == "data")
        lease_event = next(e for e in events if e.get("step") == "lease")
        resuming = next(e for e in events if e.get("state") == "resuming")
        total = first_step["time"] - t0
        trainer_start = lease_event["time"]
        result = {
            "bootstrap_returned_s": round(bootstrap_s, 2),
            "environment_s": timings["environment"],
            "dataset_restore_s": timings["data"],
            "lease_s": timings["lease"],
            "trainer_start_to_checkpoint_loaded_s": round(resuming["time"] - trainer_start, 2),
            "checkpoint_loaded_to_first_step_s": round(first_step["time"] - resuming["time"], 2),
            "bootstrap_to_first_resumed_step_s": round(total, 2),
            "resumed_at_step": resuming["global_step"], "first_step": first_step["global_step"],
            "dataset_bytes": mirrored["bytes"], "restore_bytes": data.get("bytes"),
            "baseline_prepare_from_local_parquet_s": round(prepare_s, 2),
            "restore_vs_prepare_speedup": round(prepare_s / max(timings["data"], 1e-6), 2),
        }
        for key, value in result.items():
            print(f"{key:40s} {value}")
        print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(tmux_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
