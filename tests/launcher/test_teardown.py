"""`launcher teardown`: final checkpoint of a live run, cdk destroy, SSM token gone, nothing billable left."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from job import layout
from job.s3 import put_json
from tests.launcher.conftest import cdk_calls, deploy_with_fake_cdk, launcher, write_config

RUN = "run-t"
STACK = f"SpotResnet-{RUN}"


def start_trainer(instance, bucket: str) -> Path:
    run_dir = instance.data_dir / "runs" / RUN
    script = Path(__file__).with_name("trainer_standin.py")
    command = f"{shlex.quote(sys.executable)} {script} {run_dir} {bucket} {RUN}"
    subprocess.run(instance.ssh_argv(f"tmux new-session -d -s spot-{RUN} {shlex.quote(command)}"), check=True,
                   timeout=30)
    deadline = time.monotonic() + 20
    while not (run_dir / "trainer.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (run_dir / "trainer.json").exists(), "the trainer stand-in did not start"
    return run_dir


def test_teardown_checkpoints_destroys_and_proves_nothing_is_left(tmp_path, home, aws, instance, fake_cdk):
    from job import s3 as s3mod

    outputs = deploy_with_fake_cdk(STACK, tmp_path)
    bucket = outputs["Bucket"]
    ssm = s3mod.client("ssm")
    ssm.put_parameter(Name=f"/spot-resnet/{RUN}/hf-token", Value="hf_x", Type="SecureString")
    run_dir = start_trainer(instance, bucket)
    put_json(s3mod.client("s3"), bucket, layout.state_key(RUN), {"state": "training", "time": time.time()})
    path = write_config(tmp_path / "run.toml", RUN, sshd=instance)

    result = launcher("teardown", "--config", str(path), "--yes", "--json", check=True)
    out = json.loads(result.stdout)

    # the live run checkpointed first, durably, and stopped
    latest = json.loads(s3mod.client("s3").get_object(Bucket=bucket, Key=layout.latest_checkpoint_key(RUN))["Body"].read())
    assert out["final_checkpoint"] == {"global_step": latest["global_step"], "key": latest["key"]}
    assert json.loads((run_dir / "trainer.json").read_text())["state"] == "interrupted"

    [call] = cdk_calls(fake_cdk)
    assert call["command"] == "destroy" and "--force" in call["argv"]
    assert call["context"]["stack_name"] == STACK and call["context"]["destroy_bucket"] == "false"
    assert out["destroyed"] and out["token_deleted"]
    assert ssm.get_parameters(Names=[f"/spot-resnet/{RUN}/hf-token"])["InvalidParameters"]
    assert out["leftovers"] == {"instances": [], "volumes": [], "spot_requests": [], "auto_scaling_groups": []}
    assert out["bucket_kept"] and out["bucket"] == bucket

    # re-running is safe: nothing deployed, nothing to destroy, still nothing billable
    again = launcher("teardown", "--config", str(path), "--yes", check=True)
    assert "not deployed" in again.stderr and "Nothing billable is left" in again.stdout
    assert len(cdk_calls(fake_cdk)) == 1


def test_teardown_reports_what_is_still_billable(tmp_path, home, aws, fake_cdk, monkeypatch):
    deploy_with_fake_cdk(STACK + "-leak", tmp_path)
    monkeypatch.setenv("FAKE_CDK_LEAVE", "instance")
    path = write_config(tmp_path / "run.toml", RUN, extra=f'stack = "{STACK}-leak"')
    from job import s3 as s3mod

    bucket = s3mod.client("cloudformation").describe_stacks(StackName=f"{STACK}-leak")["Stacks"][0]["Outputs"]
    bucket = {o["OutputKey"]: o["OutputValue"] for o in bucket}["Bucket"]
    put_json(s3mod.client("s3"), bucket, layout.state_key(RUN), {"state": "training", "time": time.time()})
    # a live run whose instance cannot be reached: refuse, keep everything, say how to go on
    refused = launcher("teardown", "--config", str(path), "--yes")
    assert refused.returncode == 1 and "cannot be reached for a final checkpoint" in refused.stderr
    assert "--no-checkpoint" in refused.stderr and cdk_calls(fake_cdk) == []

    result = launcher("teardown", "--config", str(path), "--yes", "--no-checkpoint", "--leftover-wait-s", "1")
    assert result.returncode == 1
    assert "STILL BILLABLE" in result.stderr and "instances: i-" in result.stderr and "g5.xlarge" in result.stderr
    assert "Traceback" not in result.stderr


def test_teardown_reports_leaked_volumes_and_spot_requests(tmp_path, home, aws, fake_cdk, monkeypatch):
    deploy_with_fake_cdk(STACK + "-vol", tmp_path)
    monkeypatch.setenv("FAKE_CDK_LEAVE", "volume,spot-request")
    path = write_config(tmp_path / "run.toml", RUN, extra=f'stack = "{STACK}-vol"')
    result = launcher("teardown", "--config", str(path), "--yes", "--no-checkpoint", "--leftover-wait-s", "1",
                      "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    left = json.loads(result.stdout)["leftovers"]
    (volume,) = left["volumes"]
    (request,) = left["spot_requests"]
    assert volume.startswith("vol-") and "500 GiB" in volume
    assert request.startswith("sir-")
    assert left["auto_scaling_groups"] == []
    text = launcher("teardown", "--config", str(path), "--yes", "--no-checkpoint", "--leftover-wait-s", "1")
    assert text.returncode == 1 and "STILL BILLABLE" in text.stderr
    assert f"volumes: {volume}" in text.stderr and f"spot_requests: {request}" in text.stderr


def test_teardown_without_yes_asks_and_cancel_destroys_nothing(tmp_path, home, aws, fake_cdk):
    deploy_with_fake_cdk(STACK + "-ask", tmp_path)
    path = write_config(tmp_path / "run.toml", RUN, extra=f'stack = "{STACK}-ask"', sshd=None)
    result = launcher("teardown", "--config", str(path), "--no-checkpoint", input="n\n")
    assert result.returncode == 1 and "teardown cancelled: nothing was destroyed" in result.stderr
    assert "Destroy stack SpotResnet-run-t-ask" in result.stderr and "is kept" in result.stderr
    assert cdk_calls(fake_cdk) == []


def test_bucket_retention_and_keep_data(tmp_path, home, aws, fake_cdk):
    from job import s3 as s3mod

    s3 = s3mod.client("s3")
    # retain = false, but --keep-data: the bucket is switched to retained before the stack goes
    kept = deploy_with_fake_cdk(STACK + "-keep", tmp_path)["Bucket"]
    s3.put_object(Bucket=kept, Key="checkpoints/run-t/step-000000001.pt", Body=b"w")
    path = write_config(tmp_path / "keep.toml", RUN, extra=f'stack = "{STACK}-keep"\n[bucket]\nretain = false')
    out = json.loads(launcher("teardown", "--config", str(path), "--yes", "--keep-data", "--json", check=True).stdout)
    deploy_call, destroy_call = cdk_calls(fake_cdk)
    assert deploy_call["command"] == "deploy" and deploy_call["context"]["destroy_bucket"] == "false"
    assert destroy_call["command"] == "destroy" and destroy_call["context"]["destroy_bucket"] == "false"
    assert out["bucket_kept"] and s3.get_object(Bucket=kept, Key="checkpoints/run-t/step-000000001.pt")

    # retain = false without --keep-data: the stack takes the bucket with it, and the user is told
    gone = deploy_with_fake_cdk(STACK + "-drop", tmp_path)["Bucket"]
    path = write_config(tmp_path / "drop.toml", RUN, extra=f'stack = "{STACK}-drop"\n[bucket]\nretain = false')
    result = launcher("teardown", "--config", str(path), "--yes", check=True)
    assert cdk_calls(fake_cdk)[-1]["context"]["destroy_bucket"] == "true"
    assert f"bucket {gone}: deleted" in result.stdout
