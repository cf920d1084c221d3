"""The trainer end to end: real torchrun (2 CPU processes, gloo), real-photo data, real moto S3.

One uninterrupted reference run is shared; the other tests interrupt, resume, corrupt or reconfigure runs
and compare their final weights against it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import pytest
import torch

from job import checkpoint, layout
from job.s3 import get_json
from tests.train.conftest import (REPO, TINY, events, metrics, run_trainer, steps_per_epoch, torchrun_cmd,
                                  trainer_env, trainer_json, write_spec)
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(240)


def _final_state(run_dir, step):
    return checkpoint.load(run_dir / "checkpoints" / f"step-{step:09d}.pt")


def _assert_ok(result):
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def reference(prepared, moto_server, tmp_path_factory):
    """An uninterrupted 2-process run: 3 epochs of the whole train split."""
    os.environ.update(moto_server.env)
    from job import s3

    s3._session.cache_clear()
    client = s3.client("s3")
    bucket = f"train-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    run_dir = tmp_path_factory.mktemp("reference")
    spec = write_spec(run_dir / "spec.json", bucket, run="ref-" + uuid.uuid4().hex[:6])
    proc = subprocess.Popen(torchrun_cmd(spec, prepared, run_dir), cwd=REPO, env=trainer_env(moto_server.env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # SIGUSR2 (rebalance recommendation): checkpoint at the next step boundary and keep training
        wait_for(lambda: (run_dir / "trainer.json").exists() and trainer_json(run_dir)["global_step"] >= 3,
                 timeout=120, what="global step 3")
        os.kill(int((run_dir / "pids" / "rank0.pid").read_text()), signal.SIGUSR2)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    total = TINY["epochs"] * steps_per_epoch(prepared)
    return {"run_dir": run_dir, "spec": spec, "bucket": bucket, "client": client, "total": total,
            "run": json.loads(spec.read_text())["run"], "stderr": stderr}


def test_loss_falls_and_accuracy_rises_far_above_chance(reference, prepared):
    run_dir, total = reference["run_dir"], reference["total"]
    status = trainer_json(run_dir)
    assert status["state"] == "finished" and status["global_step"] == total
    assert status["last_durable"]["global_step"] == total
    epochs = metrics(run_dir, "epoch")
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[-1]["train_loss"] < 0.75 * epochs[0]["train_loss"]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert epochs[-1]["top1"] >= 0.5, epochs          # 10 classes: chance is 0.10
    assert epochs[-1]["top5"] >= epochs[-1]["top1"]
    assert {e["resolution"] for e in epochs} == {48} and epochs[-1]["gpu"] == "cpu"
    steps = metrics(run_dir, "step")
    assert [s["global_step"] for s in steps] == list(range(1, total + 1))
    assert all(s["images_per_s"] > 0 and s["lr"] > 0 for s in steps)
    # the durable pointer names a complete, verified object
    pointer = get_json(reference["client"], reference["bucket"], layout.latest_checkpoint_key(reference["run"]))
    assert pointer["global_step"] == total
    head = reference["client"].head_object(Bucket=reference["bucket"], Key=pointer["key"])
    assert head["ContentLength"] == pointer["size"] and head["Metadata"]["sha256"] == pointer["sha256"]
    states = [e["state"] for e in events(run_dir) if e["type"] == "state"]
    assert states == ["training", "finished"]
    saved = [e["global_step"] for e in events(run_dir) if e["type"] == "checkpoint"]
    per_epoch = steps_per_epoch(prepared)
    extra = [step for step in saved if step % per_epoch]        # the SIGUSR2 one, between epoch ends
    assert len(extra) == 1 and 3 <= extra[0] < per_epoch and len(saved) == TINY["epochs"] + 1
    assert "(periodic or SIGUSR2)" in reference["stderr"]
    assert not list((run_dir / "pids").glob("*.pid"))  # removed at a clean exit


@pytest.fixture(scope="module")
def relaunched(reference, prepared, moto_server, tmp_path_factory):
    """One run across three launches, as spot would do it: 2 processes stopped by SIGUSR1 at a step the test
    picks; relaunched on 2 processes up to the end of epoch 1 (--max-steps); then (in a test) on 1 process."""
    run_dir = tmp_path_factory.mktemp("relaunched")
    spec = write_spec(run_dir / "spec.json", reference["bucket"], run="sig-" + uuid.uuid4().hex[:6])
    env = trainer_env(moto_server.env)
    proc = subprocess.Popen(torchrun_cmd(spec, prepared, run_dir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (run_dir / "trainer.json").exists() and trainer_json(run_dir)["global_step"] >= 5,
                 timeout=120, what="global step 5")
        pids = sorted(p.name for p in (run_dir / "pids").glob("*.pid"))
        rank1 = int((run_dir / "pids" / "rank1.pid").read_text())
        os.kill(rank1, signal.SIGUSR1)  # any rank: the all-reduce makes every rank stop at the same step
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    run = json.loads(spec.read_text())["run"]
    step = trainer_json(run_dir)["global_step"]
    sidecar = run_dir / "checkpoints" / f"step-{step:09d}.pt.json"
    stopped = {"status": trainer_json(run_dir), "events": events(run_dir), "pids": pids,
               "local_meta": json.loads(sidecar.read_text()) if sidecar.exists() else None,
               "pointer": get_json(reference["client"], reference["bucket"], layout.latest_checkpoint_key(run))}
    stopped["s3_size"] = reference["client"].head_object(Bucket=reference["bucket"],
                                                         Key=stopped["pointer"]["key"])["ContentLength"]
    epoch_end = 2 * steps_per_epoch(prepared)
    second = run_trainer(spec, prepared, run_dir, env, max_steps=epoch_end)
    _assert_ok(second)
    return {"run_dir": run_dir, "spec": spec, "env": env, "run": run, "stopped": stopped, "epoch_end": epoch_end,
            "second": second, "second_status": trainer_json(run_dir), "state_at_epoch_end": _final_state(run_dir, epoch_end)}


def test_sigusr1_stop_and_resume_is_bit_identical(reference, relaunched):
    stopped = relaunched["stopped"]
    assert stopped["pids"] == ["rank0.pid", "rank1.pid"]
    status = stopped["status"]
    step = status["global_step"]
    assert status["state"] == "interrupted" and 5 <= step < relaunched["epoch_end"]
    # durable before the trainer said "interrupted": pointer, local sidecar and trainer.json agree
    assert status["last_durable"]["global_step"] == step == stopped["pointer"]["global_step"]
    assert stopped["local_meta"]["sha256"] == stopped["pointer"]["sha256"]
    assert stopped["s3_size"] == stopped["pointer"]["size"] == stopped["local_meta"]["size"]
    interrupted = [e for e in stopped["events"] if e.get("state") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["reason"] == "SIGUSR1" and interrupted[0]["durable"] is True

    second = relaunched["second"]
    assert f"resumed from {relaunched['run_dir'] / 'checkpoints'}" in second.stderr
    assert relaunched["second_status"]["state"] == "interrupted"  # --max-steps
    assert relaunched["second_status"]["global_step"] == relaunched["epoch_end"]
    ours = relaunched["state_at_epoch_end"]
    theirs = _final_state(reference["run_dir"], relaunched["epoch_end"])
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    for index, slot in theirs["optimizer"]["state"].items():
        assert torch.equal(ours["optimizer"]["state"][index]["momentum_buffer"], slot["momentum_buffer"])
    assert ours["scheduler"] == theirs["scheduler"]
    # the epoch-0 line (in the checkpoint's metrics) agrees too, though that epoch crossed the interruption
    ref_epoch0 = metrics(reference["run_dir"], "epoch")[0]
    (our_epoch0,) = ours["metrics"]
    assert (our_epoch0["top1"], our_epoch0["val_loss"]) == (ref_epoch0["top1"], ref_epoch0["val_loss"])
    assert our_epoch0["train_loss"] == pytest.approx(ref_epoch0["train_loss"], rel=1e-9)


def test_resume_on_one_process_with_accumulation_keeps_the_schedule(reference, relaunched, prepared):
    run_dir = relaunched["run_dir"]
    third = run_trainer(relaunched["spec"], prepared, run_dir, relaunched["env"], nproc=1)
    _assert_ok(third)
    status = trainer_json(run_dir)
    assert (status["state"], status["global_step"]) == ("finished", reference["total"])
    assert (status["world_size"], status["accum"], status["micro_batch"]) == (1, 2, 16)
    assert "saved with 2 processes x 1 accumulation, now 1 x 2" in third.stderr
    # the same LR at every global step across the three launches, and no step lost or repeated
    steps = metrics(run_dir, "step")
    assert sorted(s["global_step"] for s in steps) == list(range(1, reference["total"] + 1))
    theirs = {s["global_step"]: s["lr"] for s in metrics(reference["run_dir"], "step")}
    assert {s["global_step"]: s["lr"] for s in steps} == theirs
    # epoch 1's evaluation ran after the relaunch (the stop came before it) on bit-identical weights, on one
    # process instead of two: other batch shapes, so float noise may flip at most one borderline image
    ref_epochs, our_epochs = metrics(reference["run_dir"], "epoch"), metrics(run_dir, "epoch")
    assert [e["epoch"] for e in our_epochs] == [0, 1, 2]
    assert our_epochs[1]["val_loss"] == pytest.approx(ref_epochs[1]["val_loss"], rel=1e-3)
    assert abs(our_epochs[1]["top1"] - ref_epochs[1]["top1"]) <= 1.001 / 99
    # parameters and momentum match to float tolerance (the reduction order differs: 2-way all-reduce vs
    # 2 accumulated micro-batches). BatchNorm running statistics are excluded: DDP keeps rank 0's, while one
    # process with accumulation updates them on both micro-batches; training uses batch statistics only.
    ours, ref = _final_state(run_dir, reference["total"]), _final_state(reference["run_dir"], reference["total"])
    for name, tensor in ref["model"].items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        torch.testing.assert_close(ours["model"][name], tensor, rtol=1e-3, atol=1e-4, msg=name)
    for index, slot in ref["optimizer"]["state"].items():
        torch.testing.assert_close(ours["optimizer"]["state"][index]["momentum_buffer"], slot["momentum_buffer"],
                                   rtol=1e-3, atol=1e-4)


def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, prepared, moto_server, tmp_path):
    """A new instance finds the newest S3 checkpoint truncated: it names it, resumes from the one before,
    and still ends bit-identical to the uninterrupted run."""
    client, bucket, run, total = reference["client"], reference["bucket"], reference["run"], reference["total"]
    newest = layout.checkpoint_key(run, total)
    head = client.head_object(Bucket=bucket, Key=newest)
    body = client.get_object(Bucket=bucket, Key=newest)["Body"].read()
    client.put_object(Bucket=bucket, Key=newest, Body=body[: len(body) // 2], Metadata=head["Metadata"])
    run_dir = tmp_path / "new-instance"
    spec = write_spec(run_dir / "spec.json", bucket, run=run)
    result = run_trainer(spec, prepared, run_dir, trainer_env(moto_server.env))
    _assert_ok(result)
    assert f"checkpoint s3://{bucket}/{newest} is corrupt" in result.stderr
    previous = total - steps_per_epoch(prepared)
    assert f"step-{previous:09d}.pt" in result.stderr.split("resumed from", 1)[1].splitlines()[0]
    rejected = [e for e in events(run_dir) if e["type"] == "checkpoint_rejected"]
    assert len(rejected) == 1 and newest in rejected[0]["message"]
    ours, theirs = _final_state(run_dir, total), _final_state(reference["run_dir"], total)
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    pointer = get_json(client, bucket, layout.latest_checkpoint_key(run))
    assert pointer["global_step"] == total
    assert client.head_object(Bucket=bucket, Key=newest)["ContentLength"] == pointer["size"]


def test_config_change_that_breaks_resume_is_refused(reference, prepared, moto_server, tmp_path):
    run_dir = tmp_path / "changed"
    spec = write_spec(run_dir / "spec.json", reference["bucket"], run=reference["run"], epochs=4, lr=0.2,
                      log_every=5)  # log_every alone would be fine
    result = run_trainer(spec, prepared, run_dir, trainer_env(moto_server.env), nproc=1)
    assert result.returncode != 0
    assert "refusing to resume" in result.stderr
    assert "epochs: 3 -> 4" in result.stderr and "lr: 0.1 -> 0.2" in result.stderr
    assert "log_every" not in result.stderr.split("refusing to resume", 1)[1]
    status = trainer_json(run_dir)
    assert status["state"] == "failed" and "refusing to resume" in status["error"]
    assert [e["state"] for e in events(run_dir) if e["type"] == "state"][-1] == "failed"
