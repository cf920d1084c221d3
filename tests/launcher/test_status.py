"""`launcher status`: instance facts from EC2/Auto Scaling, progress and cost from the run records in S3."""
from __future__ import annotations

import json
import time

import pytest

from job import layout
from job.records import RunRecords
from job.runspec import RunSpec
from tests.launcher.conftest import deploy_with_fake_cdk, launcher, write_config


def seed_records(s3, bucket: str, run: str, tmp_path, t0: float) -> None:
    """Two instance segments with an interruption between them, written by the real records writer."""
    def at(seconds):
        return {"time": t0 + seconds}

    first = RunRecords(tmp_path / "seg1", run=run, segment=layout.segment_id("i-first", t0), bucket=bucket, s3=s3,
                       identity={"instance_id": "i-first", "instance_type": "g5.xlarge", "az": "us-east-1a",
                                 "price_per_hour": 0.5})
    first.state("created", **at(0))
    first.state("training", **at(10))
    first.metric("step", global_step=10, epoch=0, loss=6.0, lr=0.1, images_per_s=500.0, **at(100))
    first.metric("epoch", epoch=0, global_step=50, train_loss=5.0, val_loss=5.5, top1=0.30, top5=0.6, **at(600))
    first.event("notice", action="terminate", notice_time=t0 + 3590, step=60, **at(3590))
    first.state("interrupted", **at(3600))
    first.flush(force=True)

    second = RunRecords(tmp_path / "seg2", run=run, segment=layout.segment_id("i-second", t0 + 4000), bucket=bucket,
                        s3=s3, identity={"instance_id": "i-second", "instance_type": "g4dn.xlarge", "az": "us-east-1b",
                                         "price_per_hour": 0.25})
    second.state("resuming", **at(4000))
    second.state("training", **at(4010))
    second.metric("step", global_step=60, epoch=1, loss=4.0, lr=0.05, images_per_s=300.0, **at(4100))
    second.metric("step", global_step=80, epoch=1, loss=3.5, lr=0.04, images_per_s=320.0, **at(4200))
    second.metric("epoch", epoch=1, global_step=100, train_loss=3.4, val_loss=3.9, top1=0.45, top5=0.8, **at(4300))
    second.flush(force=True)


def test_status_reports_instance_progress_interruptions_and_cost(tmp_path, home, aws):
    from job import s3 as s3mod

    outputs = deploy_with_fake_cdk("SpotResnet-run-s", tmp_path)
    bucket = outputs["Bucket"]
    s3 = s3mod.client("s3")
    t0 = time.time() - 4400
    seed_records(s3, bucket, "run-s", tmp_path, t0)
    RunSpec(run="run-s", bucket=bucket, train={"preset": "fast", "epochs": 4},
            price_per_hour={"g5.xlarge": 0.5, "g4dn.xlarge": 0.25}).upload(s3)
    path = write_config(tmp_path / "run.toml", "run-s")          # no [bucket]/[ssh]: everything from AWS

    started = time.time()
    result = launcher("status", "--config", str(path), "--json", check=True)
    now = time.time()
    status = json.loads(result.stdout)
    assert status["deployed"] and status["bucket"] == bucket
    assert status["site_url"] == outputs["SiteUrl"] and status["auto_scaling_group"] == outputs["AutoScalingGroupName"]
    [inst] = status["instances"]
    assert inst["instance_type"] == "g5.xlarge" and inst["az"] == "us-east-1a" and inst["group_state"] == "InService"
    assert inst["lifecycle"] in ("spot", "on-demand") and inst["spot_price_per_hour"] == pytest.approx(0.00001)

    p = status["progress"]
    assert p["state"] == "training" and p["status"] == "resumed" and p["epoch"] == 1 and p["global_step"] == 100
    assert p["images_per_s"] == 320.0 and p["best_top1"] == 45.0 and p["best_top5"] == 80.0
    assert p["interruptions"] == 1 and p["notices"] == 1
    assert p["epochs_total"] == 4 and p["total_steps"] == 200 and p["progress"] == 0.5   # 50 steps/epoch × 4
    seg1, seg2 = p["segments"]
    assert seg1["instance_type"] == "g5.xlarge" and not seg1["live"] and seg1["ended_by"] == "interrupted"
    assert seg1["cost_usd"] == pytest.approx(3600 / 3600 * 0.5)
    assert seg2["instance_type"] == "g4dn.xlarge" and seg2["live"]
    low, high = (started - (t0 + 4000)) / 3600 * 0.25, (now - (t0 + 4000)) / 3600 * 0.25
    assert low - 1e-6 <= seg2["cost_usd"] <= high + 1e-6
    assert p["cost_usd"] == pytest.approx(seg1["cost_usd"] + seg2["cost_usd"])
    assert p["projected_cost_usd"] == pytest.approx(p["cost_usd"] / 0.5)       # half done: twice the cost
    billed = seg1["duration_s"] + seg2["duration_s"]
    assert p["eta_s"] == pytest.approx(billed)                                  # the other half, at the same pace

    text = launcher("status", "--config", str(path), "--html", str(tmp_path / "page.html"), check=True)
    for expected in ("g5.xlarge", "us-east-1a", "resumed (training)", "100/200", "45.00%", "interruptions", "$0.",
                     "1h0"):
        assert expected in text.stdout, expected
    page = (tmp_path / "page.html").read_text()
    assert "run-s" in page and "<svg" in page


def test_status_of_a_stack_that_is_not_deployed(tmp_path, home, aws):
    path = write_config(tmp_path / "run.toml", "run-none")
    status = json.loads(launcher("status", "--config", str(path), "--json", check=True).stdout)
    assert status["deployed"] is False and status["progress"] is None and status["instances"] == []
    text = launcher("status", "--config", str(path), check=True)
    assert "not deployed" in text.stdout
