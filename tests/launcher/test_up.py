"""`launcher up`: cdk deploy with the config's context, wait for the instance and SSH, write `Host <run>`."""
from __future__ import annotations

import json
import subprocess

from tests.launcher.conftest import ROOT, cdk_calls, launcher, write_config

# What the moto server's EC2 lists for us-east-1 (all of type availability-zone, all available).
US_EAST_1_ZONES = "us-east-1a,us-east-1b,us-east-1c,us-east-1d,us-east-1e,us-east-1f"


def test_up_deploys_waits_and_writes_ssh_alias(tmp_path, home, aws, instance, fake_cdk, checkip):
    path = write_config(tmp_path / "run.toml", "run-up", sshd=instance)
    result = launcher("up", "--config", str(path), check=True)

    calls = cdk_calls(fake_cdk)
    assert len(calls) == 1 and calls[0]["command"] == "deploy"
    argv, context = calls[0]["argv"], calls[0]["context"]
    assert "--require-approval" in argv and "--outputs-file" in argv and "--all" in argv
    assert context == {"stack_name": "SpotResnet-run-up", "nodes": "1", "instance_types": "g5.xlarge,g4dn.xlarge",
                       "allocation_strategy": "price-capacity-optimized", "destroy_bucket": "false",
                       "operator_cidr": f"{checkip}/32", "availability_zones": US_EAST_1_ZONES}
    assert calls[0]["cwd"] == str(ROOT)            # where cdk.json and app.py are
    assert calls[0]["region"] == "us-east-1"       # the config's region, not whatever the profile says
    assert "public subnets in every zone of us-east-1" in result.stderr

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


def test_up_deploys_into_the_config_region_with_every_zone_of_it(tmp_path, home, aws, fake_cdk, checkip):
    """The zones come from the config's region (moto's eu-west-1 has three); the CDK CLI is pointed at that
    region although this process's environment says us-east-1, and the stack is found there afterwards."""
    path = write_config(tmp_path / "run.toml", "run-eu", extra="")
    path.write_text(path.read_text().replace('region = "us-east-1"', 'region = "eu-west-1"')
                    .replace("nodes = 1", "nodes = 0"))
    result = launcher("up", "--config", str(path), "--json", check=True)
    (call,) = cdk_calls(fake_cdk)
    assert call["region"] == "eu-west-1"
    assert call["context"]["availability_zones"] == "eu-west-1a,eu-west-1b,eu-west-1c"
    out = json.loads(result.stdout)
    assert out["site_url"] == "https://spotresnet-run-eu.lambda-url.eu-west-1.on.aws/"
    assert out["bucket"] == "spotresnet-run-eu-bucket" and out["instance"] is None   # nodes = 0: parked

    # zones named in the config's [context] win over the lookup
    path.write_text(path.read_text() + '[context]\navailability_zones = ["eu-west-1b", "eu-west-1c"]\n')
    launcher("up", "--config", str(path), "--json", check=True)
    assert cdk_calls(fake_cdk)[-1]["context"]["availability_zones"] == "eu-west-1b,eu-west-1c"


def test_region_zones_leave_out_local_zones_and_unavailable_ones(aws, moto_server):
    """The lookup asks EC2 for zone-type availability-zone in state available: a Local Zone (which the
    describe call lists once opted in) never gets a subnet. Checked on the request sent to moto."""
    from launcher.aws import Aws
    from launcher.commands.up import region_zones
    from launcher.config import parse

    cfg = parse({"name": "run-z", "region": "us-east-1"})
    client = Aws(cfg.region)
    seen = []
    client.client("ec2").meta.events.register("before-parameter-build.ec2.DescribeAvailabilityZones",
                                              lambda params, **_: seen.append(dict(params)))
    assert ",".join(region_zones(cfg, client)) == US_EAST_1_ZONES
    (params,) = seen
    assert sorted(params["Filters"], key=lambda f: f["Name"]) == [
        {"Name": "state", "Values": ["available"]}, {"Name": "zone-type", "Values": ["availability-zone"]}]
    assert "AllAvailabilityZones" not in params      # opted-out Local Zones are not even listed
