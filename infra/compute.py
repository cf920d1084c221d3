"""Compute: a launch template and a 100%-spot Auto Scaling group across g4dn/g5/g6 types and all zones."""
from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Validations, aws_autoscaling as autoscaling, aws_ec2 as ec2, aws_iam as iam
from constructs import Construct

from infra import user_data
from infra.config import StackConfig

ROOT_DEVICE = "/dev/sda1"  # the Ubuntu DLAMI's root device
DATA_DEVICE = "/dev/sdf"   # EBS data volume, used only by types without NVMe instance store
_STRATEGIES = {
    "price-capacity-optimized": autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
    "capacity-optimized": autoscaling.SpotAllocationStrategy.CAPACITY_OPTIMIZED,
}


class Compute(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, vpc: ec2.IVpc,
                 security_group: ec2.ISecurityGroup, instance_profile: iam.IInstanceProfile,
                 bucket_name: str) -> None:
        super().__init__(scope, construct_id)
        block_devices = [ec2.BlockDevice(device_name=ROOT_DEVICE, volume=ec2.BlockDeviceVolume.ebs(
            config.root_volume_gb, volume_type=ec2.EbsDeviceVolumeType.GP3, encrypted=True, delete_on_termination=True))]
        if config.data_volume_gb:
            block_devices.append(ec2.BlockDevice(device_name=DATA_DEVICE, volume=ec2.BlockDeviceVolume.ebs(
                config.data_volume_gb, volume_type=ec2.EbsDeviceVolumeType.GP3, encrypted=True,
                delete_on_termination=True)))
        self.launch_template = ec2.LaunchTemplate(
            self, "LaunchTemplate",
            # Resolved by CloudFormation from the public SSM parameter at deploy time: no synth-time lookup.
            machine_image=ec2.MachineImage.from_ssm_parameter(config.ami_parameter, os=ec2.OperatingSystemType.LINUX),
            user_data=ec2.UserData.custom(user_data.render(bucket=bucket_name, region=Aws.REGION)),
            instance_profile=instance_profile,
            security_group=security_group,
            block_devices=block_devices,
            require_imdsv2=True,
            # Hop limit 2: containers on the instance (one network hop further) still reach IMDS.
            http_put_response_hop_limit=2,
            key_pair=ec2.KeyPair.from_key_pair_name(self, "KeyPair", config.key_pair) if config.key_pair else None,
        )
        self.group = autoscaling.AutoScalingGroup(
            self, "Group",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                launch_template=self.launch_template,
                launch_template_overrides=[autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(t))
                                           for t in config.instance_types],
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=0,
                    spot_allocation_strategy=_STRATEGIES[config.allocation_strategy],
                ),
            ),
            # Launch a replacement when EC2 recommends it, before the interruption notice arrives.
            capacity_rebalance=True,
            min_capacity=config.nodes,
            max_capacity=config.nodes,
            desired_capacity=config.nodes,
        )
        Validations.of(self.group).acknowledge(
            Acknowledgment(id="@aws-cdk/aws-autoscaling:desiredCapacitySet",
                           reason="Desired capacity is the `nodes` context: every deploy must set it (0 parks the group)."),
            Acknowledgment(id="AwsSolutions-AS3",
                           reason="Scaling events are recorded by the interruption-events rule and the run records; "
                                  "no SNS topic is needed."),
            Acknowledgment(id="AwsSolutions-EC26",
                           reason="The rule cannot read volumes through the launch template reference; the launch "
                                  "template encrypts the root and data volumes (asserted in tests/infra)."),
        )
