"""`launcher up`: deploy the stack, wait for an instance that answers SSH, write `Host <run>` for ssh."""
from __future__ import annotations

import ipaddress
import os
import urllib.request

from launcher import cdk, progress, sshconfig
from launcher.aws import Aws
from launcher.config import RunConfig, check_cidr
from launcher.connection import answers
from launcher.deployment import Deployment, scratch_dir
from launcher.errors import LauncherError

CHECKIP_URL = "https://checkip.amazonaws.com"
CHECKIP_ENV = "LAUNCHER_CHECKIP_URL"    # where to ask for the caller's public IP (tests point it at loopback)


def public_cidr(url: str | None = None, timeout: float = 10.0) -> str:
    """The caller's public address as a /32 (or /128) CIDR."""
    url = url or os.environ.get(CHECKIP_ENV) or CHECKIP_URL
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(100).decode("ascii", "replace").strip()
        address = ipaddress.ip_address(text)
    except (OSError, ValueError) as exc:
        raise LauncherError(f"could not learn your public IP from {url} ({exc}): set operator_cidr = "
                            "\"<your IP>/32\" in the run config") from None
    return f"{address}/{address.max_prefixlen}"


def region_zones(config: RunConfig, aws: Aws) -> tuple[str, ...]:
    """The zones the stack gets a public subnet in: every available AZ of the config's region.

    Synth does no lookups (it must work without credentials), so the launcher asks EC2 and passes them as
    context; `[context] availability_zones` in the config wins when given."""
    if "availability_zones" in config.context:
        return ()
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        zones = aws.availability_zones()
    except (BotoCoreError, ClientError) as exc:
        raise LauncherError(f"could not list the Availability Zones of {config.region} ({exc}): check your AWS "
                            "credentials (`aws sts get-caller-identity`) and the config's region") from None
    if not zones:
        raise LauncherError(f"EC2 reports no available Availability Zone in {config.region}: is the region "
                            "enabled for your account? Pick another region in the config")
    return tuple(zones)


def up(config: RunConfig, *, checkip_url: str | None = None, instance_timeout_s: float = 1800,
       ssh_timeout_s: float = 600, poll_s: float = 10.0) -> dict:
    cidr = check_cidr(config.operator_cidr) if config.operator_cidr else public_cidr(checkip_url)
    progress.step(f"SSH will be admitted from {cidr}")
    aws = Aws(config.region)
    zones = region_zones(config, aws)
    if zones:
        progress.step(f"public subnets in every zone of {config.region}: {', '.join(zones)}")
    outputs_file = scratch_dir(config.name) / "cdk-outputs.json"
    all_outputs = cdk.deploy(config.cdk_context(cidr, zones), outputs_file, region=config.region)
    outputs = all_outputs.get(config.stack_name)
    if outputs is None and len(all_outputs) == 1:
        outputs = next(iter(all_outputs.values()))
    if not outputs:
        raise LauncherError(f"cdk deploy wrote no outputs for stack {config.stack_name} in {outputs_file}")
    progress.done(f"stack {config.stack_name} deployed")
    deployment = Deployment(config, outputs=outputs)
    result = {"stack": config.stack_name, "bucket": deployment.bucket, "site_url": deployment.site_url,
              "auto_scaling_group": deployment.asg_name, "operator_cidr": cidr, "ssh_alias": None, "instance": None}
    if config.nodes == 0:
        progress.warn("nodes = 0: the group is parked, no instance will start (set nodes = 1 and re-run `launcher up`)")
        return result

    if deployment.asg_name:
        instance = progress.wait_until(
            deployment.instance, what=f"a spot instance in service in {deployment.asg_name}",
            timeout=instance_timeout_s, interval=poll_s,
            describe=lambda: ", ".join(f"{m['instance_id']} {m['lifecycle_state']}"
                                       for m in deployment.aws.group_instances(deployment.asg_name)) or "none yet")
        result["instance"] = instance.to_dict()
        progress.done(f"instance {instance.instance_id} ({instance.instance_type}, {instance.az}) is in service")
    target = deployment.ssh_target()
    progress.wait_until(lambda: answers(target), what=f"SSH on {target}", timeout=ssh_timeout_s, interval=poll_s)
    progress.done(f"SSH answers on {target}")
    result["ssh_config"] = str(sshconfig.write_host(config.name, target))
    result["ssh_alias"] = config.name
    return result
