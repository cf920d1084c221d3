"""The AWS calls the launcher makes (boto3 through job.s3.client: botocore retries, AWS_ENDPOINT_URL honoured)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from launcher.errors import LauncherError

STACK_TAG = "aws:cloudformation:stack-name"
ASG_TAG = "aws:autoscaling:groupName"


class Aws:
    """Clients for one region, made on first use."""

    def __init__(self, region: str):
        self.region = region
        self._clients: dict[str, object] = {}

    def client(self, service: str):
        if service not in self._clients:
            from job import s3

            self._clients[service] = s3.client(service, region=self.region)
        return self._clients[service]

    # ------------------------------------------------------------------------------------ CloudFormation
    def stack_outputs(self, stack_name: str) -> dict[str, str] | None:
        """OutputKey → value, or None when the stack does not exist."""
        cfn = self.client("cloudformation")
        try:
            stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
        except cfn.exceptions.ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        if not stacks or stacks[0].get("StackStatus", "").startswith("DELETE_COMPLETE"):
            return None
        return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}

    # --------------------------------------------------------------------------------- instances
    def group_instances(self, asg_name: str) -> list[dict]:
        """[{instance_id, lifecycle_state, health_status}] of the Auto Scaling group ([] if it is gone)."""
        asg = self.client("autoscaling")
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])["AutoScalingGroups"]
        if not groups:
            return []
        return [{"instance_id": i["InstanceId"], "lifecycle_state": i["LifecycleState"],
                 "health_status": i.get("HealthStatus")} for i in groups[0].get("Instances", [])]

    def group_exists(self, asg_name: str) -> bool:
        asg = self.client("autoscaling")
        return bool(asg.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])["AutoScalingGroups"])

    def instances(self, instance_ids: list[str] | None = None, filters: list[dict] | None = None) -> list["Instance"]:
        if instance_ids is not None and not instance_ids:
            return []
        ec2 = self.client("ec2")
        kwargs = {}
        if instance_ids:
            kwargs["InstanceIds"] = list(instance_ids)
        if filters:
            kwargs["Filters"] = filters
        found = []
        for page in ec2.get_paginator("describe_instances").paginate(**kwargs):
            for reservation in page["Reservations"]:
                found.extend(Instance.from_api(i) for i in reservation["Instances"])
        return found

    # ---------------------------------------------------------------------------------------- zones
    def availability_zones(self) -> list[str]:
        """Names of the region's available Availability Zones; Local and Wavelength Zones are left out
        (the stack puts a public subnet in each zone returned, and GPU spot capacity lives in real AZs)."""
        ec2 = self.client("ec2")
        zones = ec2.describe_availability_zones(Filters=[
            {"Name": "zone-type", "Values": ["availability-zone"]},
            {"Name": "state", "Values": ["available"]},
        ])["AvailabilityZones"]
        return sorted(z["ZoneName"] for z in zones)

    # ------------------------------------------------------------------------------------- prices
    def spot_price(self, instance_type: str, az: str | None = None) -> float | None:
        """The latest Linux spot price of `instance_type` (in `az`, or the highest across AZs)."""
        prices = self.spot_prices([instance_type], az=az)
        return prices.get(instance_type)

    def spot_prices(self, instance_types: list[str], az: str | None = None) -> dict[str, float]:
        """Latest price per type; without `az`, the highest current price across AZs (a cost upper bound)."""
        import datetime

        ec2 = self.client("ec2")
        kwargs = {"InstanceTypes": list(instance_types), "ProductDescriptions": ["Linux/UNIX"],
                  "StartTime": datetime.datetime.now(datetime.timezone.utc)}
        if az:
            kwargs["AvailabilityZone"] = az
        latest: dict[tuple[str, str], tuple] = {}
        for page in ec2.get_paginator("describe_spot_price_history").paginate(**kwargs):
            for row in page["SpotPriceHistory"]:
                key = (row["InstanceType"], row["AvailabilityZone"])
                if key not in latest or row["Timestamp"] > latest[key][0]:
                    latest[key] = (row["Timestamp"], float(row["SpotPrice"]))
        prices: dict[str, float] = {}
        for (itype, _az), (_ts, price) in latest.items():
            prices[itype] = max(prices.get(itype, 0.0), price)
        return prices

    # -------------------------------------------------------------------------------------- SSM
    def put_secret(self, name: str, value: str, description: str) -> None:
        self.client("ssm").put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True,
                                         Description=description)

    def delete_secret(self, name: str) -> bool:
        """True if it existed. Idempotent."""
        ssm = self.client("ssm")
        try:
            ssm.delete_parameter(Name=name)
            return True
        except ssm.exceptions.ParameterNotFound:
            return False

    # ------------------------------------------------------------------------------- leftovers
    def billable_leftovers(self, stack_name: str, asg_name: str | None) -> dict[str, list[str]]:
        """What could still cost money after the stack is gone: instances, unattached volumes, spot requests."""
        ec2 = self.client("ec2")
        tag_filters = [[{"Name": f"tag:{STACK_TAG}", "Values": [stack_name]}]]
        if asg_name:
            tag_filters.append([{"Name": f"tag:{ASG_TAG}", "Values": [asg_name]}])
        live_states = ["pending", "running", "shutting-down", "stopping", "stopped"]
        instances: set[str] = set()
        volumes: set[str] = set()
        requests: set[str] = set()
        for tags in tag_filters:
            for inst in self.instances(filters=tags + [{"Name": "instance-state-name", "Values": live_states}]):
                instances.add(f"{inst.instance_id} ({inst.state}, {inst.instance_type}, {inst.az})")
            for page in ec2.get_paginator("describe_volumes").paginate(
                    Filters=tags + [{"Name": "status", "Values": ["available", "creating"]}]):
                volumes.update(f"{v['VolumeId']} ({v['Size']} GiB, {v['State']})" for v in page["Volumes"])
            spot = ec2.describe_spot_instance_requests(
                Filters=tags + [{"Name": "state", "Values": ["open", "active"]}])["SpotInstanceRequests"]
            requests.update(f"{r['SpotInstanceRequestId']} ({r['State']})" for r in spot)
        groups = [asg_name] if asg_name and self.group_exists(asg_name) else []
        return {"instances": sorted(instances), "volumes": sorted(volumes), "spot_requests": sorted(requests),
                "auto_scaling_groups": groups}


@dataclass(frozen=True)
class Instance:
    instance_id: str
    instance_type: str
    az: str
    state: str
    lifecycle: str                 # "spot" or "on-demand"
    public_ip: str | None
    public_dns: str | None
    launch_time: float | None

    @classmethod
    def from_api(cls, data: dict) -> "Instance":
        launch = data.get("LaunchTime")
        return cls(
            instance_id=data["InstanceId"],
            instance_type=data.get("InstanceType", ""),
            az=data.get("Placement", {}).get("AvailabilityZone", ""),
            state=data.get("State", {}).get("Name", ""),
            lifecycle=data.get("InstanceLifecycle", "on-demand"),
            public_ip=data.get("PublicIpAddress"),
            public_dns=data.get("PublicDnsName") or None,
            launch_time=launch.timestamp() if launch is not None else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def pick_output(outputs: dict[str, str], name: str) -> str | None:
    """The output called `name`, also when CDK appended a hash to the logical id (e.g. `BucketName1A2B3C4D`)."""
    if name in outputs:
        return outputs[name]
    want = name.lower()
    for key in sorted(outputs):
        base = re.sub(r"[0-9A-F]{8}$", "", key).lower()
        if base == want or base.startswith(want) or base.endswith(want):
            return outputs[key]
    return None


def require(value, what: str, stack_name: str):
    if not value:
        raise LauncherError(f"the stack {stack_name} has no output for {what}: is it deployed? Run `launcher up`.")
    return value
