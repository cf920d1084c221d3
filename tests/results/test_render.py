"""Rendering details that the sample runs do not reach: record fields as the real writers shape them."""
from __future__ import annotations

from infra.results_site.runtime import render, runs


def test_notice_time_from_the_metadata_service_is_shown_as_written():
    # job.watcher records the IMDS notice time verbatim (an ISO string), our writers use epoch seconds.
    history = runs.RunHistory(run="r", events=[
        {"time": 1_700_000_000.0, "type": "notice", "_segment": "s", "action": "terminate",
         "notice_time": "2023-11-14T22:15:20Z", "checkpoint_key": "checkpoints/r/step-000000012.pt"},
        {"time": 1_700_000_001.0, "type": "rebalance", "_segment": "s", "notice_time": 1_700_000_000.0},
    ])
    page = render.events_html(history)
    assert "notice_time=2023-11-14T22:15:20Z" in page
    assert "notice_time=2023-11-14 22:13 UTC" in page
    assert "checkpoint_key=checkpoints/r/step-000000012.pt" in page
    assert "notice_time=—" not in page
