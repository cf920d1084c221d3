"""A small stand-in trainer that keeps the trainer contract (docs/CONTRACTS.md) for watcher tests.

It writes RUNDIR/pids/rank0.pid and RUNDIR/trainer.json, "trains" by counting steps, and logs every signal
it receives (with the wall time it arrived) to RUNDIR/signals.jsonl. SIGUSR1: checkpoint at the next step
boundary — a real upload to S3 when --bucket is given — then state interrupted, exit 0. SIGUSR2: the same
checkpoint, then keep going. The real trainer (job/train.py) is driven in test_real_trainer.py.
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, required=True)
parser.add_argument("--bucket")
parser.add_argument("--run", default="r1")
parser.add_argument("--step-s", type=float, default=0.05)
args = parser.parse_args()
run_dir = args.run_dir
(run_dir / "pids").mkdir(parents=True, exist_ok=True)
requests = []


def on_signal(signum, _frame):
    requests.append(signum)
    with (run_dir / "signals.jsonl").open("a") as fh:
        fh.write(json.dumps({"signal": signal.Signals(signum).name, "time": time.time()}) + "\n")


signal.signal(signal.SIGUSR1, on_signal)
signal.signal(signal.SIGUSR2, on_signal)
state = {"pid": os.getpid(), "state": "starting", "global_step": 0, "epoch": 0, "last_durable": None}


def write_state():
    tmp = run_dir / "trainer.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, run_dir / "trainer.json")


def checkpoint():
    key = f"checkpoints/{args.run}/step-{state['global_step']:09d}.pt"
    if args.bucket:
        import boto3

        boto3.client("s3").put_object(Bucket=args.bucket, Key=key, Body=os.urandom(1024))
    state["last_durable"] = {"key": key, "global_step": state["global_step"], "time": time.time()}


(run_dir / "pids" / "rank0.pid").write_text(str(os.getpid()))
write_state()
state["state"] = "training"
while True:
    time.sleep(args.step_s)
    state["global_step"] += 1
    while requests:
        signum = requests.pop(0)
        state["state"] = "checkpointing"
        write_state()
        checkpoint()
        if signum == signal.SIGUSR1:
            state["state"] = "interrupted"
            write_state()
            sys.exit(0)
        state["state"] = "training"
    write_state()
