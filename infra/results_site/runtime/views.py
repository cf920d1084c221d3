"""Read + derive + present: what the handler and the static writer both serve (HTML or JSON)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

if __package__:
    from . import render, runs, summary as summary_mod
else:  # top-level in the Lambda bundle
    import render
    import runs
    import summary as summary_mod

LINK_EXPIRY_S = 15 * 60


@dataclass
class RunView:
    history: runs.RunHistory
    summary: summary_mod.RunSummary
    download: dict | None

    @property
    def exists(self) -> bool:
        return self.history.exists

    def html(self, *, now: float | None = None, static: bool = False) -> str:
        return render.run_page(self.history, self.summary, download=self.download, now=now, static=static)

    def json(self) -> dict:
        last_step = next((m for m in reversed(self.history.metrics) if m.get("type") == "step"), None)
        return clean({
            "run": self.history.run,
            "summary": self.summary.to_json(),
            "spec": self.history.spec,
            "state": self.history.state,
            "epochs": [_public(r) for r in summary_mod.epoch_rows(self.history)],
            "last_step": _public(last_step) if last_step else None,
            "checkpoint": self.download or self.history.latest_checkpoint,
            "notices": self.history.notices,
        })


def _public(record: dict) -> dict:
    return {("segment" if k == "_segment" else k): v for k, v in record.items()}


def clean(value):
    """JSON-safe: NaN/inf (which the records may hold, e.g. a diverged loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def run_view(s3, bucket: str, run: str, *, prefix: str = runs.DEFAULT_RECORDS_PREFIX, now: float | None = None,
             link_expiry_s: int = LINK_EXPIRY_S) -> RunView:
    now = time.time() if now is None else now
    history = runs.load_run(s3, bucket, run, prefix)
    download = runs.checkpoint_download(s3, bucket, history, expires_in=link_expiry_s, now=now) if history.exists else None
    return RunView(history, summary_mod.summarize(history, now=now), download)


def run_list(s3, bucket: str, *, prefix: str = runs.DEFAULT_RECORDS_PREFIX, now: float | None = None):
    """(summaries, notices) of every run; a run's own notices are summarised as one line each."""
    now = time.time() if now is None else now
    summaries, notices = [], []
    for history in runs.load_runs(s3, bucket, prefix):
        summaries.append(summary_mod.summarize(history, now=now))
        if history.notices:
            notices.append(f"run {history.run}: {len(history.notices)} notice(s), see its page")
    return summaries, notices


def list_html(summaries, notices, *, now: float | None = None) -> str:
    return render.list_page(summaries, notices, now=now)


def list_json(summaries, notices) -> dict:
    keys = ("run", "status", "state", "model", "preset", "best_top1", "best_top5", "epochs_done", "epochs_total",
            "progress", "started", "updated", "elapsed_s", "cost_usd", "projected_cost_usd")
    rows = [{k: getattr(s, k) for k in keys} | {"interruptions": len(s.interruptions)}
            for s in sorted(summaries, key=lambda s: s.updated or 0, reverse=True)]
    return clean({"runs": rows, "notices": list(notices)})
