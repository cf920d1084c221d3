"""Facts derived from a run's records: status, best accuracy, elapsed time, segments, cost and projection.

Cost model: an instance segment is billed from its first to its last record (to `now` while it is the
live one) at the segment's spot price per hour (from its records, else the spec's price table). The
projection assumes the rest of the run costs what the part done so far cost per unit of progress.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

ACTIVE_STATES = ("created", "preparing", "training", "resuming")
# An active run writes a step line every few seconds to minutes and flushes about every 30 s; this long
# without any record means its instance is gone (crashed, or reclaimed without a notice).
STALL_AFTER_S = 15 * 60
TERMINAL_STATES = ("finished", "failed")
# Copied from job/recipes.py (this folder may not import job/; tests/results/test_summary.py checks they
# agree): the model and epoch count a spec gets when its train dict does not override them.
DEFAULT_MODEL = "resnet50"
PRESET_EPOCHS = {"fast": 16, "classic": 90, "target": 90}


def number(value) -> float | None:
    """A finite float, or None for anything else (bools, strings, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def accuracy_scale(rows: list[dict]) -> float:
    """Factor turning the run's top1/top5 into percentages: all values within [0, 1] are fractions."""
    values = [v for r in rows for v in (number(r.get("top1")), number(r.get("top5"))) if v is not None]
    return 100.0 if values and max(values) <= 1.0 else 1.0


@dataclass
class Segment:
    id: str
    instance_id: str | None
    instance_type: str | None
    az: str | None
    price_per_hour: float | None
    start: float
    end: float
    live: bool
    ended_by: str

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def cost_usd(self) -> float | None:
        return None if self.price_per_hour is None else self.duration_s / 3600.0 * self.price_per_hour


@dataclass
class RunSummary:
    run: str
    state: str | None
    status: str
    model: str
    preset: str | None
    best_top1: float | None
    best_top5: float | None
    epochs_done: int
    epochs_total: int | None
    global_step: int | None
    total_steps: int | None
    progress: float | None
    started: float | None
    updated: float | None
    elapsed_s: float | None
    cost_usd: float | None
    projected_cost_usd: float | None
    projected_remaining_s: float | None
    interruptions: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    unpriced_segments: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_json(self) -> dict:
        data = asdict(self)
        data["segments"] = [{**asdict(s), "duration_s": s.duration_s, "cost_usd": s.cost_usd} for s in self.segments]
        return data


def epoch_rows(history) -> list[dict]:
    """One epoch line per epoch (the latest written, as a resumed run may repeat one), in epoch order."""
    rows: dict[int, dict] = {}
    for record in history.metrics:
        if record.get("type") == "epoch" and number(record.get("epoch")) is not None:
            rows[int(record["epoch"])] = record
    return [rows[e] for e in sorted(rows)]


def _best_percent(rows: list[dict], field_name: str) -> float | None:
    values = [v for v in (number(r.get(field_name)) for r in rows) if v is not None]
    return max(values) * accuracy_scale(rows) if values else None


def _last_field(records, name: str):
    for record in reversed(records):
        if record.get(name) is not None:
            return record[name]
    return None


def _state(history) -> str | None:
    states = [e for e in history.events if e.get("type") == "state" and isinstance(e.get("state"), str)]
    state = states[-1]["state"] if states else None
    pointer = history.state or {}
    pointer_time = number(pointer.get("time"))
    if isinstance(pointer.get("state"), str) and (not states or (pointer_time or 0) > states[-1]["time"]):
        state = pointer["state"]
    return state


def _status(state: str | None, interruptions: int, stalled: bool) -> str:
    if state is None:
        return "unknown"
    if stalled:
        return "stalled"
    if state == "training":
        return "resumed" if interruptions else "running"
    return state


def _segments(history, live: bool, now: float) -> list[Segment]:
    prices = (history.spec or {}).get("price_per_hour") or {}
    prices = prices if isinstance(prices, dict) else {}
    events_of: dict[str, list[dict]] = {s: [] for s in history.segments}
    times_of: dict[str, list[float]] = {s: [] for s in history.segments}
    for record in history.events:
        events_of.setdefault(record["_segment"], []).append(record)
    for record in history.events + history.metrics:
        times_of.setdefault(record["_segment"], []).append(record["time"])
    # The agent, the trainer and the watcher on one instance each write their own segment (one writer per
    # object), but it is one instance and one bill: they make one row, named after the trainer's segment.
    members: dict[str, list[str]] = {}
    for seg_id in times_of:
        members.setdefault(_last_field(events_of.get(seg_id, []), "instance_id") or seg_id, []).append(seg_id)
    segments: list[Segment] = []
    for group in members.values():
        seg_id = min(group, key=lambda s: (s.endswith(("-agent", "-watcher")), s))
        times = [t for s in group for t in times_of[s]]
        if not times:
            continue
        events = sorted((e for s in group for e in events_of.get(s, [])), key=lambda e: e["time"])
        instance_type = _last_field(events, "instance_type")
        price = number(_last_field(events, "price_per_hour"))
        if price is None and isinstance(instance_type, str):
            price = number(prices.get(instance_type))
        states = [e["state"] for e in events if e.get("type") == "state"]
        segments.append(Segment(
            id=seg_id,
            instance_id=_last_field(events, "instance_id"),
            instance_type=instance_type,
            az=_last_field(events, "az"),
            price_per_hour=price,
            start=min(times),
            end=max(times),
            live=False,
            ended_by=states[-1] if states and states[-1] in ("interrupted", *TERMINAL_STATES) else "",
        ))
    segments.sort(key=lambda s: s.start)
    if segments and live and not segments[-1].ended_by:
        last = segments[-1]
        last.live, last.ended_by, last.end = True, "running", max(last.end, now)
    for seg in segments:
        # An instance reclaimed without a notice (or a crashed trainer) leaves no final state record.
        seg.ended_by = seg.ended_by or "stopped without a final record"
    return segments


def _train(history) -> dict:
    train = (history.spec or {}).get("train") or {}
    return train if isinstance(train, dict) else {}


def _progress(history, rows, state, global_step) -> tuple[float | None, int | None, int | None]:
    """(fraction done, total steps, total epochs); epochs are 0-based as in job.loader (set_epoch(0) first)."""
    train = _train(history)
    epochs_total = number(_last_field(history.events, "epochs")) or number(train.get("epochs"))
    if epochs_total is None and isinstance(train.get("preset", "fast"), str):
        epochs_total = PRESET_EPOCHS.get(train.get("preset", "fast"))
    epochs_total = int(epochs_total) if epochs_total else None
    total_steps = number(_last_field(history.events + history.metrics, "total_steps"))
    if total_steps is None and epochs_total and rows:
        # Steps per epoch from the last finished epoch: it ended at global step (epoch + 1) * steps_per_epoch.
        last = rows[-1]
        end_step, epoch = number(last.get("global_step")), number(last.get("epoch"))
        if end_step and epoch is not None and end_step > 0:
            total_steps = end_step / (epoch + 1) * epochs_total
    total_steps = int(round(total_steps)) if total_steps else None
    if state == "finished":
        progress = 1.0
    elif total_steps and global_step is not None:
        progress = min(1.0, global_step / total_steps)
    elif epochs_total and rows:
        progress = min(1.0, len(rows) / epochs_total)
    else:
        progress = None
    return progress, total_steps, epochs_total


def summarize(history, now: float | None = None) -> RunSummary:
    now = time.time() if now is None else now
    rows = epoch_rows(history)
    state = _state(history)
    interruptions = [e["time"] for e in history.events if e.get("type") == "state" and e.get("state") == "interrupted"]
    times = [r["time"] for r in history.events + history.metrics]
    pointer_time = number((history.state or {}).get("time"))
    if pointer_time is not None:
        times.append(pointer_time)
    started, updated = (min(times), max(times)) if times else (None, None)
    stalled = state in ACTIVE_STATES and updated is not None and now - updated > STALL_AFTER_S
    live = state in ACTIVE_STATES and not stalled
    # Elapsed runs on with the clock only while an instance is at work; otherwise it ends at the last record.
    elapsed = None if started is None else (max(now, updated) if live else updated) - started

    steps = [number(r.get("global_step")) for r in history.metrics]
    steps = [s for s in steps if s is not None]
    global_step = int(max(steps)) if steps else None
    progress, total_steps, epochs_total = _progress(history, rows, state, global_step)

    segments = _segments(history, live, now)
    priced = [s.cost_usd for s in segments if s.cost_usd is not None]
    cost = sum(priced) if priced else None
    unpriced = len(segments) - len(priced)
    billed_s = sum(s.duration_s for s in segments)
    projected_cost = projected_remaining = None
    if progress and cost is not None:
        projected_cost = cost / progress
    if progress and state != "finished":
        projected_remaining = billed_s * (1.0 - progress) / progress

    train = _train(history)
    model = train.get("model") or DEFAULT_MODEL
    preset = train.get("preset")
    return RunSummary(
        run=history.run, state=state, status=_status(state, len(interruptions), stalled),
        model=str(model), preset=None if preset is None else str(preset),
        best_top1=_best_percent(rows, "top1"), best_top5=_best_percent(rows, "top5"),
        epochs_done=len(rows), epochs_total=epochs_total, global_step=global_step, total_steps=total_steps,
        progress=progress, started=started, updated=updated, elapsed_s=elapsed,
        cost_usd=cost, projected_cost_usd=projected_cost, projected_remaining_s=projected_remaining,
        interruptions=interruptions, segments=segments, unpriced_segments=unpriced,
    )
