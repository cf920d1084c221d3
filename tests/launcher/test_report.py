"""Run progress and cost from records: the edge cases (no records, torn lines, a finished run)."""
from __future__ import annotations

import json

import pytest

from launcher import report


def test_no_records_is_not_started():
    rep = report.build("run-x", {}, epochs=4)
    assert rep.state == "not started" and rep.cost_usd == 0 and rep.eta_s is None and rep.segments == []


def test_torn_last_line_is_skipped():
    body = (json.dumps({"time": 1.0, "type": "state", "state": "training"}) + "\n" + '{"time": 2.0, "ty').encode()
    assert report._jsonl(body) == [{"time": 1.0, "type": "state", "state": "training"}]


def test_finished_run_costs_what_it_cost_and_falls_back_to_prices():
    records = {
        "20260101T000000Z-i-a": {
            "events": [{"time": 0.0, "type": "state", "state": "training", "instance_type": "g5.xlarge"},
                       {"time": 7200.0, "type": "state", "state": "finished", "instance_type": "g5.xlarge"}],
            "metrics": [{"time": 3600.0, "type": "epoch", "epoch": 0, "global_step": 10, "top1": 0.5}],
        },
        "20260101T030000Z-i-b": {   # no recorded price, no spec price: the on-demand list price
            "events": [{"time": 8000.0, "type": "state", "state": "training", "instance_type": "g4dn.xlarge"},
                       {"time": 9800.0, "type": "state", "state": "finished", "instance_type": "g4dn.xlarge"}],
            "metrics": [],
        },
    }
    rep = report.build("run-x", records, epochs=1, spec_prices={"g5.xlarge": 0.4}, now=1e9)
    first, second = rep.segments
    assert first["price_source"] == "run spec" and first["cost_usd"] == pytest.approx(2 * 0.4)
    assert second["price_source"] == "on-demand list price" and second["cost_usd"] == pytest.approx(0.5 * 0.526)
    assert not first["live"] and not second["live"]                 # a finished run stops costing
    assert rep.state == "finished" and rep.eta_s == 0.0 and rep.projected_usd == pytest.approx(rep.cost_usd)
    assert rep.best_top1 == 0.5 and rep.total_steps == 10
