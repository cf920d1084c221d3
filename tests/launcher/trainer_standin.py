"""A stand-in for the trainer's signal contract (docs/CONTRACTS.md), run in tmux on the test instance.

    python trainer_standin.py RUN_DIR BUCKET RUN

Writes RUN_DIR/pids/rank0.pid and RUN_DIR/trainer.json every step; on SIGUSR1 it writes a checkpoint and
checkpoints/<run>/latest.json to S3 at the next step boundary, then trainer.json state "interrupted" with
last_durable, and exits 0: what `launcher teardown` relies on, without torch.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from job import layout, s3 as s3mod
from job.s3 import put_json


def write_state(run_dir: Path, **state) -> None:
    tmp = run_dir / "trainer.json.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), **state}))
    os.replace(tmp, run_dir / "trainer.json")


def main() -> int:
    run_dir, bucket, run = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    (run_dir / "pids" / "rank0.pid").write_text(str(os.getpid()))
    stop = {"requested": False}
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(requested=True))
    s3 = s3mod.client("s3")
    step = 0
    while True:
        step += 1
        time.sleep(0.05)
        if stop["requested"]:
            key = layout.checkpoint_key(run, step)
            s3.put_object(Bucket=bucket, Key=key, Body=b"weights at step %d" % step)
            put_json(s3, bucket, layout.latest_checkpoint_key(run),
                     {"key": key, "global_step": step, "epoch": 0, "time": time.time(), "sha256": "-", "size": 0})
            write_state(run_dir, state="interrupted", global_step=step, epoch=0,
                        last_durable={"key": key, "global_step": step, "time": time.time()})
            return 0
        write_state(run_dir, state="training", global_step=step, epoch=0, last_durable=None)


if __name__ == "__main__":
    sys.exit(main())
