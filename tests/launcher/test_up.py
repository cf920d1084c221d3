"""`launcher up`: cdk deploy with the config's context, wait for the instance and SSH, write `Host <run>`."""
from __future__ import annotations

import subprocess

from tests.launcher.conftest import ROOT, cdk_calls, launcher, write_config


def test_up_deploys_waits_and_writes_ssh_alias(tmp_path, home, aws, instance, fake_cdk, checkip):
    path = write_config(tmp_path / "run.toml", "run-up", sshd=instance)
    result = launcher("up", "--config", str(path), check=True)

    calls = cdk_calls(fake_cdk)
    assert len(calls) == 1 and calls[0]["command"] == "deploy"
    argv, context = calls[0]["argv"], calls[0]["context"]
    assert "--require-approval" in argv and "--outputs-file" in argv and "--all" in argv
    assert context == {"stack_name": "SpotResnet-run-up", "nodes": "1", "instance_types": "g5.xlarge,g4dn.xlarge",
                       "allocation_strategy": "price-capacity-optimized", "destroy_bucket": "false",
                       "operator_cidr": f"{checkip}/32"}
    assert calls[0]["cwd"] == str(ROOT)            # where cdk.json and app.py are

    # the results URL and the next command, and `ssh run-up` works with real OpenSSH
    assert "https://spotresnet-run-up.lambda-url.us-east-1.on.aws/" in result.stdout
    assert "ssh run-up" in result.stdout and "launcher train" in result.stdout
    assert "waiting for" in result.stderr or "in service" in result.stderr
    ssh = subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", "run-up",
                          "echo $SPOT_DATA_DIR"], capture_output=True, text=True, timeout=30)
    assert ssh.returncode == 0 and ssh.stdout.strip() == str(instance.data_dir)

    # re-running is safe: deploys again (CloudFormation no-ops) and keeps one Host block
    launcher("up", "--config", str(path), check=True)
    assert len(cdk_calls(fake_cdk)) == 2
    included = (home / ".ssh" / "config.d" / "spot-resnet").read_text()
    assert included.count("Host run-up") == 1


def test_up_with_given_cidr_skips_ip_lookup_and_reports_cdk_failure(tmp_path, home, aws, instance, fake_cdk,
                                                                    monkeypatch):
    monkeypatch.setenv("LAUNCHER_CHECKIP_URL", "http://127.0.0.1:9/")   # would fail if it were asked
    monkeypatch.setenv("FAKE_CDK_FAIL", "1")
    path = write_config(tmp_path / "run.toml", "run-cidr", sshd=instance, extra='operator_cidr = "203.0.113.0/24"')
    result = launcher("up", "--config", str(path))
    assert result.returncode == 1
    assert "cdk deploy failed (cdk exit code 1)" in result.stderr and "stack rollback" in result.stderr
    assert "Traceback" not in result.stderr
    assert cdk_calls(fake_cdk)[0]["context"]["operator_cidr"] == "203.0.113.0/24"
