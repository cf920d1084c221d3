"""Run records for the results-page tests, written through the real writer (job.records.RunRecords).

`write_run` plays a run through instance segments — start, steps, epochs, spot notice, checkpoint,
interruption, resume on another instance type — with explicit timestamps, and returns what it wrote so
tests can compute expected figures independently of the page's code.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from job import layout
from job.records import RunRecords
from job.runspec import DatasetSpec, RunSpec
from job.s3 import put_json

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC: fixed, so pages and figures are reproducible
HOSTILE = "<script>alert('x')</script>"


@dataclass
class SegmentPlan:
    instance_id: str
    instance_type: str
    az: str
    price: float
    images_per_s: float
    steps: int
    end: str  # "interrupted", "finished", "failed" or "live"


@dataclass
class Written:
    run: str
    segments: list[dict] = field(default_factory=list)   # {"id", "start", "end", "price", "type", "az", "end_state"}
    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    interruptions: list[float] = field(default_factory=list)
    checkpoint_key: str | None = None
    checkpoint_body: bytes | None = None

    def cost(self) -> float:
        return sum((s["end"] - s["start"]) / 3600 * s["price"] for s in self.segments)


DEMO_PLAN = [
    SegmentPlan("i-0a1b2c3d4e5f60001", "g5.xlarge", "us-east-1a", 0.4520, 1150.0, 250, "interrupted"),
    SegmentPlan("i-0a1b2c3d4e5f60002", "g4dn.xlarge", "us-east-1c", 0.2104, 520.0, 200, "interrupted"),
    SegmentPlan("i-0a1b2c3d4e5f60003", "g6.xlarge", "us-east-1b", 0.3372, 890.0, 350, "finished"),
]


def write_run(s3, bucket: str, run: str, work_dir: Path, *, plan=DEMO_PLAN, t0: float = T0, steps_per_epoch: int = 100,
              epochs: int = 8, global_batch: int = 1024, log_every: int = 10, train: dict | None = None,
              dataset: DatasetSpec | None = None, state_extra: dict | None = None) -> Written:
    rng = random.Random(run)
    train = {"preset": "fast", "epochs": epochs, "global_batch": global_batch, **(train or {})}
    spec = RunSpec(run=run, bucket=bucket, train=train, dataset=dataset or DatasetSpec(),
                   price_per_hour={p.instance_type: p.price for p in plan}, created=t0 - 60)
    spec.upload(s3)
    total_steps = epochs * steps_per_epoch
    written = Written(run)
    step, t = 0, t0
    for index, seg in enumerate(plan):
        identity = {"instance_id": seg.instance_id, "instance_type": seg.instance_type, "az": seg.az,
                    "price_per_hour": seg.price}
        segment = layout.segment_id(seg.instance_id, t)
        records = RunRecords(work_dir / run, run=run, segment=segment, identity=identity, bucket=bucket, s3=s3,
                             flush_every_s=1e9)
        start = t
        if index == 0:
            records.state("created", time=t)
            records.state("preparing", time=t + 5)
            t += 240
        else:
            records.state("resuming", time=t, from_step=step)
            t += 90
        records.state("training", time=t, **(state_extra or {}))
        for _ in range(seg.steps // log_every):
            step += log_every
            t += log_every * global_batch / seg.images_per_s
            progress = step / total_steps
            line = dict(time=t, global_step=step, epoch=(step - 1) // steps_per_epoch,
                        loss=6.9 * math.exp(-2.2 * progress) + 0.9 + rng.uniform(-0.05, 0.05),
                        lr=1.7 * min(1.0, progress / 0.125) * (1 - progress) + 1e-4,
                        images_per_s=seg.images_per_s * rng.uniform(0.93, 1.03))
            records.metric("step", **line)
            written.steps.append(line)
            if step % steps_per_epoch == 0:
                epoch = step // steps_per_epoch - 1
                t += 25
                top1 = 0.76 * (1 - math.exp(-3.0 * progress))
                row = dict(time=t, epoch=epoch, global_step=step, train_loss=line["loss"] + 0.1,
                           val_loss=line["loss"] - 0.2, top1=top1, top5=min(0.99, top1 + 0.17), epoch_s=600.0,
                           resolution=160 + 32 * (epoch >= 5), gpu="NVIDIA A10G", gpus=1)
                records.metric("epoch", **row)
                written.epochs.append(row)
        ckpt = layout.checkpoint_key(run, step)
        if seg.end == "interrupted":
            records.event("notice", time=t + 1, action="terminate", notice_time=t + 120, step=step)
            records.event("checkpoint", time=t + 20, key=ckpt, global_step=step, seconds=18.5)
            records.state("interrupted", time=t + 22, reason="spot notice")
            written.interruptions.append(t + 22)
            t += 22
        elif seg.end in ("finished", "failed"):
            if seg.end == "finished":
                records.event("checkpoint", time=t + 20, key=ckpt, global_step=step, seconds=17.0)
                t += 20
                body = f"checkpoint of {run} at step {step}".encode() * 64
                s3.put_object(Bucket=bucket, Key=ckpt, Body=body)
                put_json(s3, bucket, layout.latest_checkpoint_key(run),
                         {"key": ckpt, "sha256": "0" * 64, "size": len(body), "global_step": step,
                          "epoch": (step - 1) // steps_per_epoch, "time": t})
                written.checkpoint_key, written.checkpoint_body = ckpt, body
            t += 2
            records.state(seg.end, time=t, **({"error": "CUDA error: " + HOSTILE} if seg.end == "failed" else {}))
        records.flush(force=True)
        written.segments.append({"id": segment, "start": start, "end": t, "price": seg.price,
                                 "type": seg.instance_type, "az": seg.az, "end_state": seg.end})
        t += 300  # the Auto Scaling group takes a few minutes to start a replacement
    return written


def write_hostile_run(s3, bucket: str, run: str, work_dir: Path) -> Written:
    """Markup wherever the records hold free text: spec fields, identity, event details, latest.json."""
    plan = [SegmentPlan("i-<b>bold</b>", "<img src=x onerror=alert(1)>", '"><svg onload=alert(2)>', 0.5, 800.0,
                        100, "failed")]
    written = write_run(s3, bucket, run, work_dir, plan=plan, epochs=2,
                        train={"preset": HOSTILE, "note": HOSTILE, "model": "<i>resnet</i>"},
                        dataset=DatasetSpec(name=HOSTILE, repo_id="evil/<script>x</script>"),
                        state_extra={"message": HOSTILE})
    put_json(s3, bucket, layout.latest_checkpoint_key(run),
             {"key": f"checkpoints/{run}/../other/{HOSTILE}.pt", "global_step": 1})
    return written


def write_malformed_run(s3, bucket: str, run: str, work_dir: Path) -> Written:
    """A run whose records were damaged: garbage lines, a truncated last line, a broken spec and state."""
    written = write_run(s3, bucket, run, work_dir, plan=DEMO_PLAN[:2], epochs=8)
    first = written.segments[0]["id"]
    metrics_key = layout.metrics_key(run, first)
    body = s3.get_object(Bucket=bucket, Key=metrics_key)["Body"].read()
    garbage = [b"this is not json", b"[1, 2, 3]", b'{"type": "step", "global_step": 5}',
               b'{"time": "yesterday", "type": "step"}',
               json.dumps({"time": written.steps[3]["time"] + 0.5, "type": "step", "global_step": 31,
                           "loss": float("nan"), "lr": 0.1, "images_per_s": float("inf")}).encode(),
               b'{"time": 17500']
    lines = body.splitlines()
    damaged = lines[:5] + garbage[:5] + lines[5:] + garbage[5:]
    s3.put_object(Bucket=bucket, Key=metrics_key, Body=b"\n".join(damaged))
    s3.put_object(Bucket=bucket, Key=layout.events_key(run, written.segments[1]["id"]), Body=b"\xff\xfe\x00\x01garbage")
    s3.put_object(Bucket=bucket, Key=layout.spec_key(run), Body=b"{not json")
    s3.put_object(Bucket=bucket, Key=layout.state_key(run), Body=b"[]")
    return written
