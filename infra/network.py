"""Network: public subnets in every zone, no NAT gateway, an S3 gateway endpoint, SSH from one CIDR."""
from __future__ import annotations

from aws_cdk import Fn, Validations, Acknowledgment, aws_ec2 as ec2
from constructs import Construct


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, operator_cidr: str,
                 availability_zones: tuple[str, ...] = (), az_count: int = 3) -> None:
        super().__init__(scope, construct_id)
        # Spot capacity differs per zone, so the group may use all of them. Zones are either given by name
        # (`launcher up` lists the region's zones) or picked at deploy time with Fn::GetAZs: no synth-time
        # lookup, so synth needs no credentials.
        zones = list(availability_zones) or [Fn.select(i, Fn.get_azs()) for i in range(az_count)]
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            availability_zones=zones,
            # Public subnets only: instances need outbound internet (the Hub, pip) and a NAT gateway would
            # cost more per hour than a g4dn spot instance.
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                                          cidr_mask=20, map_public_ip_on_launch=True)],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            restrict_default_security_group=False,
        )
        Validations.of(self.vpc).acknowledge(Acknowledgment(
            id="AwsSolutions-VPC7",
            reason="VPC flow logs are not needed: the VPC holds only the training instances, whose SSH access is "
                   "limited to the operator CIDR; flow logs would add a billable log stream per instance.",
        ))

        self.security_group = ec2.SecurityGroup(
            self, "InstanceSecurityGroup", vpc=self.vpc, allow_all_outbound=True,
            description="Training instances: SSH from the operator CIDR only",
        )
        peer = ec2.Peer.ipv6(operator_cidr) if ":" in operator_cidr else ec2.Peer.ipv4(operator_cidr)
        self.security_group.add_ingress_rule(peer, ec2.Port.tcp(22), "SSH from the operator (context operator_cidr)")
