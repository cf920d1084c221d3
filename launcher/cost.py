"""A run's progress and cost, by the results page's own accounting (infra/results_site/runtime/summary.py).

One cost model for the page and `launcher status`: each instance is billed from its first to its last record
(to now while it is the live one) at the spot price recorded for it, else the run spec's price for its type;
the projection scales the cost so far by the progress made. This module adds what the terminal shows on
top: the current epoch and throughput from the newest step line, spot notices, and the ETA.
"""
from __future__ import annotations


def run_report(s3, bucket: str, run: str, *, now: float | None = None) -> dict:
    from infra.results_site.runtime import runs, summary

    history = runs.load_run(s3, bucket, run)
    if not history.exists:
        return {"run": run, "state": "not started", "status": "not started", "segments": [], "cost_usd": None,
                "projected_cost_usd": None, "eta_s": None, "interruptions": 0, "notices": 0,
                "epoch": None, "images_per_s": None, "record_notices": history.notices}
    facts = summary.summarize(history, now=now).to_json()
    steps = [m for m in history.metrics if m.get("type") == "step" and summary.number(m.get("global_step")) is not None]
    newest = max(steps, key=lambda m: (m["global_step"], m["time"])) if steps else {}
    epochs = summary.epoch_rows(history)
    epoch = newest.get("epoch", epochs[-1]["epoch"] if epochs else None)
    return {**facts,
            "interruptions": len(facts["interruptions"]),
            "interruption_times": facts["interruptions"],
            "notices": sum(1 for e in history.events if e.get("type") == "notice"),
            "epoch": epoch,
            "images_per_s": summary.number(newest.get("images_per_s")),
            "eta_s": 0.0 if facts["state"] == "finished" else facts["projected_remaining_s"],
            "record_notices": history.notices}
