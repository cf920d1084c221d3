"""Derived facts, the copied rules (run id, keys, presets) against job/, and the chart geometry."""
from __future__ import annotations

import re

import pytest

from infra.results_site.runtime import charts, runs, summary
from job import layout, recipes


@pytest.mark.parametrize("name", ["a", "0", "demo-run", "r-2025-06-15", "a" * 63, "a" * 64, "", "-a", "A", "a_b",
                                  "a.b", "..", "a/b", "ä", "a b", " a", "run-", "9lives", "%2e%2e"])
def test_run_id_rule_agrees_with_job_layout(name):
    try:
        layout.check_run_name(name)
        accepted_by_layout = True
    except ValueError:
        accepted_by_layout = False
    assert runs.valid_run_id(name) == accepted_by_layout
    assert runs.RUN_ID.pattern == layout._RUN_NAME.pattern


def test_trailing_newline_is_rejected():
    # `re.match` with `$` would accept "demo\n"; both sides use fullmatch so such an id never reaches S3.
    assert not runs.valid_run_id("demo\n")
    with pytest.raises(ValueError):
        layout.check_run_name("demo\n")


def test_keys_agree_with_job_layout():
    assert runs.spec_key("demo-run") == layout.spec_key("demo-run")
    assert runs.state_key("demo-run") == layout.state_key("demo-run")
    assert runs.records_prefix("demo-run") == layout.records_prefix("demo-run")
    assert runs.latest_checkpoint_key("demo-run") == layout.latest_checkpoint_key("demo-run")
    assert layout.events_key("demo-run", "seg").startswith(runs.records_prefix("demo-run"))


def test_preset_defaults_agree_with_job_recipes():
    assert set(summary.PRESET_EPOCHS) == set(recipes.PRESETS)
    for preset, epochs in summary.PRESET_EPOCHS.items():
        config = recipes.build_config({"preset": preset})
        assert config.epochs == epochs and config.model == summary.DEFAULT_MODEL


@pytest.mark.parametrize("prefix", ["", "runs", "/runs/", "../runs/"])
def test_bad_records_prefix_is_refused(prefix):
    with pytest.raises(ValueError, match="ending in '/'"):
        runs.check_prefix(prefix)


def test_stalled_run_stops_costing_and_says_so(site):
    history = runs.load_run(site.s3, site.bucket, "live-run")
    last = max(r["time"] for r in history.events + history.metrics)
    fresh = summary.summarize(history, now=last + 60)
    later = summary.summarize(history, now=last + summary.STALL_AFTER_S + 60)
    assert fresh.status == "resumed" and fresh.segments[-1].live
    assert later.status == "stalled" and not later.segments[-1].live
    assert later.segments[-1].ended_by == "stopped without a final record"
    assert later.cost_usd == pytest.approx(site.live.cost(), rel=1e-9)  # billed only to the last record
    assert fresh.cost_usd > later.cost_usd


def test_progress_uses_steps_per_epoch_from_the_records(site):
    history = runs.load_run(site.s3, site.bucket, "live-run")
    s = summary.summarize(history, now=max(r["time"] for r in history.metrics) + 1)
    # live-run: 4 epochs of 100 steps, 250 steps done.
    assert s.epochs_total == 4 and s.total_steps == 400 and s.global_step == 250
    assert s.progress == pytest.approx(250 / 400)
    assert s.projected_remaining_s == pytest.approx(sum(g.duration_s for g in s.segments) * 150 / 250)


def test_accuracy_in_percent_is_kept_and_fractions_are_scaled():
    assert summary.accuracy_scale([{"top1": 0.004, "top5": 0.02}]) == 100.0
    assert summary.accuracy_scale([{"top1": 0.4, "top5": 2.1}]) == 1.0


@pytest.mark.parametrize("lo,hi,integer", [(0, 1.7, False), (0, 0.0031, False), (0, 9, True), (2.6, 2.6, False),
                                           (0, 2450, False), (1e-5, 3e-4, False)])
def test_axis_covers_the_data_with_round_ticks(lo, hi, integer):
    low, high, ticks = charts.axis(lo, hi, integer=integer)
    assert low <= lo and high >= hi and low == ticks[0] and high == ticks[-1]
    assert 2 <= len(ticks) <= 12
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    if integer:
        assert all(float(t).is_integer() for t in ticks)
    labels = [charts.tick_label(t, ticks[1] - ticks[0]) for t in ticks]
    assert len(set(labels)) == len(labels)  # distinct labels: enough decimals


def test_chart_thins_long_series_and_breaks_lines_between_runs():
    long_run = [(i / 10, (i % 7) * 1.0) for i in range(5000)]
    svg = charts.line_chart("c", "t", [charts.Series("s", [long_run, [(600.0, 1.0), (601.0, 2.0)]])],
                            x_label="x (s)", y_label="y (u)")
    d = re.search(r'<path class="line s0" d="([^"]*)"', svg).group(1)
    assert d.count("M") == 2  # two runs, two separate lines
    assert d.count(",") <= charts.MAX_POINTS + 1 + 2
    assert "x (s)" in svg and "y (u)" in svg and 'viewBox="0 0 520 300"' in svg
    assert "<circle" not in svg  # long series get no dots


def test_chart_without_data_is_empty():
    assert charts.line_chart("c", "t", [charts.Series("s", [[]])], x_label="x", y_label="y") == ""
