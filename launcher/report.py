"""A run's progress read from its records in S3: state, epoch, step, speed, ETA, best top-1, interruptions, cost."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from job import layout
from job.records import TERMINAL_STATES
from launcher import cost


def _jsonl(text: bytes) -> list[dict]:
    rows = []
    for line in text.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue                      # a torn last line of a record being written: skip it
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_records(s3, bucket: str, run: str) -> dict[str, dict[str, list[dict]]]:
    """{segment: {"events": [...], "metrics": [...]}} in segment order (segment ids start with a UTC stamp)."""
    from job.s3 import list_keys

    prefix = layout.records_prefix(run)
    segments: dict[str, dict[str, list[dict]]] = {}
    for key in sorted(list_keys(s3, bucket, prefix)):
        rest = key[len(prefix):]
        if "/" not in rest:
            continue
        seg, name = rest.split("/", 1)
        if name not in ("events.jsonl", "metrics.jsonl"):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        segments.setdefault(seg, {"events": [], "metrics": []})[name.split(".")[0]] = _jsonl(body)
    return dict(sorted(segments.items()))


@dataclass
class RunReport:
    run: str
    state: str = "not started"
    epoch: int | None = None
    epochs: int | None = None
    global_step: int | None = None
    total_steps: int | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    best_top1: float | None = None
    best_top5: float | None = None
    interruptions: int = 0
    notices: int = 0
    checkpoints: int = 0
    segments: list[dict] = field(default_factory=list)
    cost_usd: float = 0.0
    projected_usd: float | None = None
    updated: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _steps_per_epoch(epoch_rows: list[dict], step_rows: list[dict]) -> int | None:
    for row in reversed(step_rows + epoch_rows):
        if isinstance(row.get("steps_per_epoch"), int) and row["steps_per_epoch"] > 0:
            return row["steps_per_epoch"]
    ends = sorted({r["global_step"] for r in epoch_rows if isinstance(r.get("global_step"), int)})
    if len(ends) >= 2:
        return ends[-1] - ends[-2]
    if len(ends) == 1 and ends[0] > 0:
        return ends[0]                    # the first epoch ended at this step
    return None


def _steps_per_s(step_rows: list[dict]) -> float | None:
    """Speed over the latest segment's step metrics (a resumed segment starts counting afresh)."""
    rows = [r for r in step_rows if isinstance(r.get("global_step"), int) and isinstance(r.get("time"), (int, float))]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    if last["time"] <= first["time"] or last["global_step"] <= first["global_step"]:
        return None
    return (last["global_step"] - first["global_step"]) / (last["time"] - first["time"])


def build(run: str, records: dict[str, dict[str, list[dict]]], *, epochs: int | None = None,
          spec_prices: dict[str, float] | None = None, now: float | None = None) -> RunReport:
    now = time.time() if now is None else now
    report = RunReport(run=run, epochs=epochs)
    all_events = [e for seg in records.values() for e in seg["events"]]
    all_metrics = [m for seg in records.values() for m in seg["metrics"]]
    states = [e for e in all_events if e.get("type") == "state"]
    if states:
        report.state = max(states, key=lambda e: e.get("time", 0))["state"]
    report.interruptions = sum(1 for e in states if e.get("state") == "interrupted")
    report.notices = sum(1 for e in all_events if e.get("type") == "notice")
    report.checkpoints = sum(1 for e in all_events if e.get("type") == "checkpoint")

    step_rows = [m for m in all_metrics if m.get("type") == "step"]
    epoch_rows = [m for m in all_metrics if m.get("type") == "epoch"]
    if step_rows:
        last = max(step_rows, key=lambda m: (m.get("global_step", -1), m.get("time", 0)))
        report.global_step, report.epoch = last.get("global_step"), last.get("epoch")
        report.images_per_s = last.get("images_per_s")
    if epoch_rows:
        last_epoch = max(epoch_rows, key=lambda m: m.get("global_step", -1))
        if report.global_step is None or last_epoch.get("global_step", -1) >= report.global_step:
            report.global_step, report.epoch = last_epoch.get("global_step"), last_epoch.get("epoch")
        top1 = [m["top1"] for m in epoch_rows if isinstance(m.get("top1"), (int, float))]
        top5 = [m["top5"] for m in epoch_rows if isinstance(m.get("top5"), (int, float))]
        report.best_top1 = max(top1) if top1 else None
        report.best_top5 = max(top5) if top5 else None
    times = [r["time"] for r in all_events + all_metrics if isinstance(r.get("time"), (int, float))]
    report.updated = max(times) if times else None

    live_run = report.state not in TERMINAL_STATES and report.state not in ("interrupted", "not started")
    segments = []
    seg_ids = list(records)
    for i, seg_id in enumerate(seg_ids):
        seg = cost.build_segment(seg_id, records[seg_id]["events"], records[seg_id]["metrics"], spec_prices or {},
                                 live=live_run and i == len(seg_ids) - 1, now=now)
        if seg:
            segments.append(seg)
    report.segments = [s.to_dict() for s in segments]
    report.cost_usd = cost.total(segments)

    per_epoch = _steps_per_epoch(epoch_rows, step_rows)
    if per_epoch and epochs:
        report.total_steps = per_epoch * epochs
    latest_steps = records[seg_ids[-1]]["metrics"] if seg_ids else []
    rate = _steps_per_s([m for m in latest_steps if m.get("type") == "step"])
    if report.state == "finished":
        report.eta_s = 0.0
    elif report.total_steps and report.global_step is not None and rate:
        report.eta_s = max(0.0, (report.total_steps - report.global_step) / rate)
    price = segments[-1].price_per_hour if segments else None
    report.projected_usd = (report.cost_usd if report.state == "finished"
                            else cost.projected(segments, report.eta_s, price))
    return report
