"""One run's deployment as the laptop finds it: the stack outputs, the bucket, the group, the instance to SSH to.

The run config's `[bucket] name` and `[ssh] host` override discovery (the local drill and tests have no
CloudFormation and no public IPs); everything else comes from DescribeStacks / Auto Scaling / EC2.
"""
from __future__ import annotations

import functools
from pathlib import Path

from launcher.aws import Aws, Instance, pick_output
from launcher.config import RunConfig
from launcher.connection import SshTarget
from launcher.errors import LauncherError


class Deployment:
    def __init__(self, config: RunConfig, outputs: dict[str, str] | None = None):
        self.config = config
        self.aws = Aws(config.region)
        self._outputs = outputs

    @property
    def outputs(self) -> dict[str, str]:
        if self._outputs is None:
            self._outputs = self.aws.stack_outputs(self.config.stack_name) or {}
        return self._outputs

    @property
    def deployed(self) -> bool:
        return bool(self.outputs)

    @functools.cached_property
    def s3(self):
        return self.aws.client("s3")

    @property
    def bucket(self) -> str:
        name = self.config.bucket_name or pick_output(self.outputs, "Bucket")
        if not name:
            raise LauncherError(f"no bucket: the stack {self.config.stack_name} is not deployed in "
                                f"{self.config.region}. Run `launcher up` first (or set [bucket] name).")
        return name

    @property
    def asg_name(self) -> str | None:
        return pick_output(self.outputs, "AutoScalingGroupName")

    @property
    def site_url(self) -> str | None:
        return pick_output(self.outputs, "SiteUrl")

    # ---------------------------------------------------------------------------------- instances
    def instances(self, in_service_only: bool = True) -> list[Instance]:
        if not self.asg_name:
            return []
        members = self.aws.group_instances(self.asg_name)
        ids = [m["instance_id"] for m in members if not in_service_only or m["lifecycle_state"] == "InService"]
        found = {i.instance_id: i for i in self.aws.instances(ids)}
        return [found[i] for i in ids if i in found and found[i].state == "running"]

    def instance(self) -> Instance | None:
        """The instance runs go to: the oldest in-service one (stable while replacements come and go)."""
        running = self.instances()
        return min(running, key=lambda i: (i.launch_time or 0, i.instance_id)) if running else None

    def ssh_target(self) -> SshTarget:
        ssh = self.config.ssh
        key = ssh.key_path
        if ssh.host:
            return SshTarget(ssh.host, ssh.port, ssh.user, key)
        inst = self.instance()
        if inst is None:
            raise LauncherError(
                f"no running instance in the group {self.asg_name or '(stack not deployed)'}: "
                f"spot capacity may be short right now. Check `launcher status`; the group keeps trying. "
                f"If the stack is missing, run `launcher up`.")
        host = inst.public_dns or inst.public_ip
        if not host:
            raise LauncherError(f"instance {inst.instance_id} has no public address: the subnets must assign "
                                "public IPs (see infra/network.py)")
        return SshTarget(host, ssh.port, ssh.user, key)

    def connect(self, deadline_s: float = 15.0):
        from launcher.connection import connect
        from launcher.remote import Remote

        return Remote(connect(self.ssh_target(), deadline_s=deadline_s))


def scratch_dir(run: str) -> Path:
    """Where the laptop keeps build products of a run (the package); safe to delete."""
    import os

    root = Path(os.environ.get("SPOT_RESNET_HOME", Path.home() / ".cache" / "spot-resnet"))
    return root / run
