"""`launcher train` against a real sshd + tmux and the moto server, with the real job bootstrap."""
from __future__ import annotations

import json
import subprocess
import time
import uuid

from job import layout
from tests.launcher.conftest import launcher, write_config


def s3_objects(s3, bucket) -> dict[str, bytes]:
    from job.s3 import list_keys

    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in list_keys(s3, bucket, "")}


def test_train_publishes_pushes_and_starts_the_run(tmp_path, home, aws, bucket, instance, monkeypatch):
    from job import s3 as s3mod

    token = f"hf_TESTSECRET{uuid.uuid4().hex}"
    monkeypatch.setenv("TEST_HF_TOKEN", token)
    path = write_config(tmp_path / "run.toml", "run-a", sshd=instance, bucket=bucket)
    result = launcher("train", "--config", str(path), "--json", check=True)
    out = json.loads(result.stdout)
    assert out["bootstrap"]["action"] == "started" and out["bootstrap"]["session"] == "spot-run-a"
    assert out["hf_token_parameter"] == "/spot-resnet/run-a/hf-token"

    s3 = s3mod.client("s3")
    objects = s3_objects(s3, bucket)
    spec = json.loads(objects[layout.spec_key("run-a")])
    assert spec["run"] == "run-a" and spec["bucket"] == bucket
    assert spec["dataset"]["hf_token_parameter"] == "/spot-resnet/run-a/hf-token"
    assert spec["dataset"]["name"] == "photos"
    assert spec["train"] == {"preset": "fast", "model": "resnet18", "epochs": 4, "global_batch": 32}
    assert json.loads(objects[layout.active_run_key()]) == {"run": "run-a", "package_key": layout.package_key("run-a")}
    head = s3.head_object(Bucket=bucket, Key=layout.package_key("run-a"))
    assert head["Metadata"]["sha256"] == out["package_sha256"]

    parameter = s3mod.client("ssm").get_parameter(Name="/spot-resnet/run-a/hf-token", WithDecryption=True)["Parameter"]
    assert parameter["Type"] == "SecureString" and parameter["Value"] == token

    # the package is extracted on the instance, and the real bootstrap started the run from it
    pkg = instance.data_dir / "pkg" / "run-a"
    assert (pkg / "job" / "bootstrap.py").exists() and (pkg / "job" / "requirements.txt").exists()
    assert (pkg / ".package-sha256").read_text() == out["package_sha256"]
    assert (instance.data_dir / "runs" / "run-a" / "spec.json").exists()      # fetched by the bootstrap
    agent_log = instance.data_dir / "runs" / "run-a" / "agent.log"
    deadline = time.monotonic() + 30
    while not (agent_log.exists() and agent_log.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_log.stat().st_size > 0, "the agent started in tmux wrote nothing"

    # re-running is safe: nothing re-uploaded, same package, a run of the same name is not duplicated
    again = json.loads(launcher("train", "--config", str(path), "--json", check=True).stdout)
    assert again["package_sha256"] == out["package_sha256"]
    assert s3.head_object(Bucket=bucket, Key=layout.package_key("run-a"))["LastModified"] == head["LastModified"]
    sessions = instance.run_as_instance("tmux", "list-sessions", "-F", "#{session_name}", capture_output=True,
                                        text=True).stdout.split()
    assert sessions.count("spot-run-a") <= 1

    # the token is in SSM only: not in any S3 object, file on the instance, or the environment of its sessions
    time.sleep(1)
    assert not [k for k, body in s3_objects(s3, bucket).items() if token.encode() in body]
    leaks = subprocess.run(["grep", "-rl", "--binary-files=text", token, str(instance.root)],
                           capture_output=True, text=True)
    assert leaks.stdout == "", f"token found in {leaks.stdout}"
    env = subprocess.run(instance.ssh_argv("env; cat ~/.bash_history 2>/dev/null"), capture_output=True, text=True,
                         timeout=30)
    assert token not in env.stdout
    assert token not in result.stdout + result.stderr

    # --follow streams the agent's log until its tmux session ends (here the Hub is unreachable, so soon)
    followed = launcher("train", "--config", str(path), "--follow", timeout=240, check=True)
    assert "[data]" in followed.stdout and "agent" in followed.stdout
    assert "session ended" in followed.stderr or "(it ended)" in followed.stderr
    assert token not in followed.stdout + followed.stderr


def test_train_refuses_a_busy_instance_unless_forced(tmp_path, home, aws, bucket, instance, monkeypatch):
    from job import s3 as s3mod

    monkeypatch.setenv("TEST_HF_TOKEN", "hf_dummy")
    instance.run_as_instance("tmux", "new-session", "-d", "-s", "spot-other-run", "sleep 600", check=True)
    path = write_config(tmp_path / "run.toml", "run-b", sshd=instance, bucket=bucket)
    refused = launcher("train", "--config", str(path))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "busy with run(s) other-run" in refused.stderr and "--force" in refused.stderr
    s3 = s3mod.client("s3")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0       # refused before touching anything

    forced = launcher("train", "--config", str(path), "--force", "--json", check=True)
    assert json.loads(forced.stdout)["bootstrap"]["action"] == "started"
    sessions = instance.run_as_instance("tmux", "list-sessions", "-F", "#{session_name}", capture_output=True,
                                        text=True).stdout.split()
    assert "spot-other-run" in sessions                                     # the other run was left alone


def test_train_refuses_when_another_run_is_active_in_the_bucket(tmp_path, home, aws, bucket, instance, monkeypatch):
    from job import s3 as s3mod
    from job.s3 import put_json

    monkeypatch.setenv("TEST_HF_TOKEN", "hf_dummy")
    s3 = s3mod.client("s3")
    put_json(s3, bucket, layout.active_run_key(), {"run": "older", "package_key": layout.package_key("older")})
    put_json(s3, bucket, layout.state_key("older"), {"state": "training", "time": time.time()})
    path = write_config(tmp_path / "run.toml", "run-c", sshd=instance, bucket=bucket)
    refused = launcher("train", "--config", str(path))
    assert refused.returncode == 1 and "'older' is the active run" in refused.stderr

    put_json(s3, bucket, layout.state_key("older"), {"state": "finished", "time": time.time()})
    launcher("train", "--config", str(path), check=True)
    assert json.loads(s3.get_object(Bucket=bucket, Key=layout.active_run_key())["Body"].read())["run"] == "run-c"


def test_train_without_token_or_mirror_is_a_config_error(tmp_path, home, aws, bucket, instance, monkeypatch):
    monkeypatch.delenv("TEST_HF_TOKEN", raising=False)
    path = write_config(tmp_path / "run.toml", "run-d", sshd=instance, bucket=bucket)
    result = launcher("train", "--config", str(path))
    assert result.returncode == 2 and "export TEST_HF_TOKEN=hf_" in result.stderr
