"""SpotTrainingStack: one stack composed of one construct per concern."""
from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Stack, Tags
from constructs import Construct

from infra.compute import Compute
from infra.config import StackConfig
from infra.cost_guard import CostGuard
from infra.instance_role import InstanceRole
from infra.interruption_events import InterruptionEvents
from infra.network import Network
from infra.results_site.site import ResultsSite
from infra.storage import Storage

# Output keys the launcher reads from DescribeStacks.
PROJECT_TAG = "spot-resnet:stack"
OUTPUT_KEYS = ("Bucket", "AutoScalingGroupName", "SiteUrl", "SecurityGroupId", "Region")


class SpotTrainingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, stack_name=config.stack_name,
                         description="Spot GPU training of ResNet-50 on ImageNet-1K (spot-resnet)", **kwargs)
        self.config = config
        # On every taggable resource, instances included (the group propagates it): `launcher teardown`
        # and cost reports find what belongs to this stack by it.
        Tags.of(self).add(PROJECT_TAG, config.stack_name)
        self.network = Network(self, "Network", operator_cidr=config.operator_cidr,
                               availability_zones=config.availability_zones, az_count=config.az_count)
        self.storage = Storage(self, "Storage", destroy_bucket=config.destroy_bucket)
        bucket = self.storage.bucket
        self.instance_role = InstanceRole(self, "InstanceRole", bucket=bucket)
        self.compute = Compute(self, "Compute", config=config, vpc=self.network.vpc,
                               security_group=self.network.security_group,
                               instance_profile=self.instance_role.instance_profile,
                               bucket_name=bucket.bucket_name)
        self.results_site = ResultsSite(self, "ResultsSite", bucket=bucket)
        self.interruption_events = InterruptionEvents(self, "InterruptionEvents")
        self.cost_guard = (CostGuard(self, "CostGuard", email=config.budget_email, monthly_usd=config.budget_usd)
                           if config.budget_email else None)

        CfnOutput(self, "Bucket", value=bucket.bucket_name, description="Bucket for packages, data, checkpoints, records")
        CfnOutput(self, "AutoScalingGroupName", value=self.compute.group.auto_scaling_group_name,
                  description="Spot Auto Scaling group of training instances")
        CfnOutput(self, "SiteUrl", value=self.results_site.url.url, description="Results page")
        CfnOutput(self, "SecurityGroupId", value=self.network.security_group.security_group_id,
                  description="Security group of the training instances (SSH from operator_cidr)")
        CfnOutput(self, "Region", value=Aws.REGION, description="Region of the stack")
