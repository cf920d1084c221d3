"""The drill's arithmetic: how steps become epochs, where notices go, and what counts as a lost step."""
from __future__ import annotations

import pytest

from launcher.drill import Interruption, Segment, analyse, latency_steps, next_notice_step, split_steps


def test_steps_become_whole_epochs_of_at_most_a_full_epoch():
    assert split_steps(96) == (8, 12)
    assert split_steps(48) == (4, 12)
    assert split_steps(16) == (2, 8)
    assert split_steps(25) == (3, 9)          # rounded up to whole epochs: 27 steps
    with pytest.raises(Exception, match="at least 2 steps"):
        split_steps(1)


def test_notices_leave_room_for_the_watchers_latency():
    latency = latency_steps(4.0)              # 4 steps/s x (1 s poll + 2 s slack) + 1
    assert latency == 13
    total, position = 96, 6
    first = next_notice_step(position, total, 3, latency)
    assert position < first < total
    # even if every notice takes the full latency, the last one still lands before the end
    at = first
    for remaining in (2, 1):
        at = next_notice_step(at + latency, total, remaining, latency)
    assert at + latency < total


def _segment(name, start, resumed, steps, stopped=None, finished=None, durable_at=None):
    events = [{"time": start, "type": "state", "state": "resuming" if resumed else "training",
               "global_step": resumed}]
    if durable_at is not None:
        events.append({"time": durable_at, "type": "checkpoint", "key": f"k{stopped}", "global_step": stopped})
        events.append({"time": durable_at + 0.1, "type": "notice", "step": stopped, "durable_after_notice": True})
    if stopped is not None:
        events.append({"time": (durable_at or start) + 0.5, "type": "state", "state": "interrupted",
                       "global_step": stopped})
    if finished is not None:
        events.append({"time": start + 100, "type": "state", "state": "finished", "global_step": finished})
    metrics = [{"time": t, "type": "step", "global_step": g} for t, g in steps]
    return Segment(name, events, metrics)


def test_a_resume_from_the_notice_checkpoint_loses_nothing():
    first = _segment("s1", 0, 0, [(1, 1), (2, 2), (3, 3), (4, 4)], stopped=4, durable_at=4.5)
    second = _segment("s2", 10, 4, [(20, 5), (21, 6)], finished=6)
    rows, problems = analyse([first, second], [Interruption("A", "i-a", noticed_at=2.5, replaced_at=12.0)], 12)
    assert problems == []
    assert rows[0]["steps_before_notice"] == 2 and rows[0]["checkpoint_step"] == 4
    assert rows[0]["lost_steps"] == 0 and rows[0]["mid_epoch"] is True
    assert rows[0]["notice_to_durable_s"] == 2.0 and rows[0]["resume_s"] == 8.0


def test_a_resume_from_an_older_checkpoint_counts_the_steps_it_redoes():
    first = _segment("s1", 0, 0, [(1, 1), (2, 2), (3, 3), (4, 4)], stopped=4, durable_at=4.5)
    second = _segment("s2", 10, 1, [(20, 2)], finished=6)       # resumed from step 1, not 4
    rows, problems = analyse([first, second], [Interruption("A", "i-a", noticed_at=3.5, replaced_at=12.0)], 12)
    assert rows[0]["lost_steps"] == 2                           # steps 2 and 3 were done before the notice
    assert any("not the notice checkpoint's 4" in p for p in problems)


def test_an_interruption_the_watcher_did_not_record_is_a_problem():
    first = _segment("s1", 0, 0, [(1, 1), (2, 2)], stopped=2, durable_at=2.5)
    first.events = [e for e in first.events if e["type"] != "notice"]
    second = _segment("s2", 10, 2, [(20, 3)], finished=3)
    rows, problems = analyse([first, second], [Interruption("A", "i-a", noticed_at=1.5, replaced_at=12.0)], 12)
    assert rows[0]["lost_steps"] == 0
    assert problems == ["interruption 1: the watcher recorded no notice with a durable checkpoint in segment s1"]


def test_a_missing_segment_is_a_problem_not_a_crash():
    only = _segment("s1", 0, 0, [(1, 1)], finished=1)
    rows, problems = analyse([only], [Interruption("A", "i-a", noticed_at=0.5)], 12)
    assert rows == [] and "expected 2 trainer segments" in problems[0]
