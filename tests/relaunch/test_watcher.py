"""The watcher process against the local IMDS and a contract-keeping trainer process, records in moto S3."""
from __future__ import annotations

import json
import os
import time

from job import layout
from job.s3 import client, list_keys

from tests.waiting import wait_for

from .conftest import child_env, signals

INTERVAL = 1.0


def _events(bucket: str, run: str) -> list[dict]:
    s3 = client("s3")
    found = []
    for key in list_keys(s3, bucket, layout.records_prefix(run)):
        if key.endswith("events.jsonl"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            found += [json.loads(line) for line in body.splitlines()]
    return found


def test_notice_signals_within_one_interval_and_is_recorded(imds, bucket, procs, tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    trainer = procs.trainer(run_dir, bucket)
    watcher = procs.watcher("--run-dir", str(run_dir), "--bucket", bucket, "--run", "r1",
                            "--interval", str(INTERVAL))
    wait_for(lambda: imds.stats()["counts"].get("/latest/meta-data/spot/instance-action", 0) >= 2, 20,
             "the watcher to poll")
    notice = imds.schedule_notice(in_s=1.3)
    assert watcher.wait(30) == 0, watcher.stderr.read()
    assert trainer.wait(10) == 0
    received = signals(run_dir)
    assert [s["signal"] for s in received] == ["SIGUSR1"]
    latency = received[0]["time"] - notice["visible_at"]
    print(f"notice -> SIGUSR1 delivered in {latency:.3f}s (poll interval {INTERVAL}s)")
    assert 0 <= latency <= INTERVAL + 0.25

    trainer_state = json.loads((run_dir / "trainer.json").read_text())
    assert trainer_state["state"] == "interrupted"
    (event,) = [e for e in _events(bucket, "r1") if e["type"] == "notice"]
    assert event["action"] == "terminate" and event["notice_time"] == notice["time"]
    assert event["checkpoint_key"] == trainer_state["last_durable"]["key"]
    assert event["step"] == trainer_state["last_durable"]["global_step"] > 0
    assert event["durable_after_notice"] is True and 0 < event["notice_to_durable_s"] < 10
    assert event["instance_id"] == "i-0aaaaaaaaaaaaaaa1" and event["instance_type"] == "g5.xlarge"
    assert event["signalled_pids"] == [trainer.pid]
    # the checkpoint the event names is really in S3
    client("s3").head_object(Bucket=bucket, Key=event["checkpoint_key"])


def test_watcher_survives_errors_timeouts_and_token_expiry(bucket, procs, tmp_path):
    from job.testing.imds_server import ImdsServer

    run_dir = tmp_path / "runs" / "r2"
    # tokens die after 1 s whatever the client asks for: every later poll first gets a 401
    with ImdsServer(max_token_ttl_s=1) as server:
        trainer = procs.trainer(run_dir, bucket, run="r2")
        server.inject_faults(errors_5xx=3, timeouts=2, timeout_s=2.0, truncated=2, garbage=2)
        watcher = procs.watcher("--run-dir", str(run_dir), "--bucket", bucket, "--run", "r2",
                                "--interval", "0.3", "--max-backoff", "0.6",
                                env=child_env(**server.env))
        wait_for(lambda: server.stats()["counts"].get("unauthorized", 0) >= 2, 30, "401s after token expiry")
        assert watcher.poll() is None, "the watcher died on metadata errors"
        assert signals(run_dir) == [], "the trainer was signalled without a notice"
        server.schedule_notice(in_s=0)
        assert watcher.wait(30) == 0
        counts = server.stats()["counts"]
    assert trainer.wait(10) == 0
    assert [s["signal"] for s in signals(run_dir)] == ["SIGUSR1"]
    log = watcher.stderr.read()
    assert counts["5xx"] == 3 and counts["timeouts"] == 2 and counts["token_requests"] >= 3
    assert counts["truncated"] == 2 and counts["garbage"] == 2   # replies cut short, JSON that is no object
    assert "broken reply" in log and "expected a JSON object" in log and "Traceback" not in log
    assert "metadata poll failed" in log and "HTTP 500" in log
    assert any(e["type"] == "notice" for e in _events(bucket, "r2"))


def test_rebalance_sends_one_sigusr2_and_training_continues(imds, bucket, procs, tmp_path):
    run_dir = tmp_path / "runs" / "r3"
    trainer = procs.trainer(run_dir, bucket, run="r3")
    watcher = procs.watcher("--run-dir", str(run_dir), "--bucket", bucket, "--run", "r3", "--interval", "0.3")
    imds.schedule_rebalance(in_s=0)
    wait_for(lambda: signals(run_dir), 10, "SIGUSR2")
    time.sleep(1.5)  # the recommendation stays posted: several more polls, no second signal
    assert [s["signal"] for s in signals(run_dir)] == ["SIGUSR2"]
    assert watcher.poll() is None, watcher.stderr.read()
    assert trainer.poll() is None
    wait_for(lambda: (lambda st: st["state"] == "training" and st["last_durable"])(
        json.loads((run_dir / "trainer.json").read_text())), 10, "the early checkpoint, training on")
    assert [e["type"] for e in _events(bucket, "r3")] == ["rebalance"]
    imds.schedule_notice(in_s=0)
    assert watcher.wait(30) == 0 and trainer.wait(10) == 0
    assert [s["signal"] for s in signals(run_dir)] == ["SIGUSR2", "SIGUSR1"]


def test_no_rebalance_checkpoint_flag_leaves_trainer_alone(imds, procs, tmp_path):
    run_dir = tmp_path / "runs" / "r4"
    trainer = procs.trainer(run_dir)
    watcher = procs.watcher("--run-dir", str(run_dir), "--interval", "0.3", "--no-rebalance-checkpoint")
    imds.schedule_rebalance(in_s=0)
    wait_for(lambda: imds.stats()["counts"].get("/latest/meta-data/spot/instance-action", 0) >= 5, 20, "polls")
    assert signals(run_dir) == [] and trainer.poll() is None and watcher.poll() is None


def test_pid_only_still_signals_and_says_recording_is_off(imds, procs, tmp_path):
    run_dir = tmp_path / "runs" / "r5"
    trainer = procs.trainer(run_dir)
    watcher = procs.watcher("--pid", str(trainer.pid), "--interval", "0.3")
    imds.schedule_notice(in_s=0.5)
    assert watcher.wait(30) == 0
    assert trainer.wait(10) == 0
    assert [s["signal"] for s in signals(run_dir)] == ["SIGUSR1"]
    assert "recording is off" in watcher.stderr.read()


def test_a_handled_notice_is_never_signalled_again(imds, procs, tmp_path):
    run_dir = tmp_path / "runs" / "r6"
    first = procs.trainer(run_dir)
    imds.schedule_notice(in_s=0)
    assert procs.watcher("--run-dir", str(run_dir), "--interval", "0.3").wait(30) == 0
    assert first.wait(10) == 0
    (run_dir / "signals.jsonl").unlink()
    # a restarted watcher (systemd, tmux) sees the same notice: it must not signal a new trainer
    second = procs.trainer(run_dir)
    again = procs.watcher("--run-dir", str(run_dir), "--interval", "0.3")
    polls = imds.stats()["counts"]["/latest/meta-data/spot/instance-action"]
    wait_for(lambda: imds.stats()["counts"]["/latest/meta-data/spot/instance-action"] >= polls + 4, 20, "polls")
    assert signals(run_dir) == [] and second.poll() is None and again.poll() is None


def test_stale_pid_file_is_not_signalled(imds, procs, tmp_path):
    import sys

    run_dir = tmp_path / "runs" / "r7"
    (run_dir / "pids").mkdir(parents=True)
    (run_dir / "pids" / "rank0.pid").write_text("999999")   # no such process
    old = time.time() - 3600
    bystander = procs.start([sys.executable, "-c", "import time; time.sleep(60)"])
    (run_dir / "pids" / "rank1.pid").write_text(str(bystander.pid))
    os.utime(run_dir / "pids" / "rank1.pid", (old, old))    # written long before that process started
    imds.schedule_notice(in_s=0)
    watcher = procs.watcher("--run-dir", str(run_dir), "--interval", "0.3")
    time.sleep(2.0)
    assert bystander.poll() is None, "a process that is not the trainer was signalled"
    assert watcher.poll() is None  # still waiting for a trainer to appear
    watcher.terminate()
    watcher.wait(10)
    assert "not the trainer" in watcher.stderr.read()
