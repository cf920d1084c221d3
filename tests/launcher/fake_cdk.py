"""A stand-in for the `cdk` executable (no CloudFormation exists here): placed first on PATH by the tests.

It appends its argv and context to $FAKE_CDK_LOG (JSON lines) and does to the moto server what the real
stack would: `deploy` creates the bucket, a launch template, a spot Auto Scaling group tagged like a
CloudFormation resource (in the zones given by the availability_zones context), and a stack with the real
stack's output keys in the region the CLI was pointed at (AWS_REGION), then writes --outputs-file;
`destroy` deletes the group (terminating its instances) and the stack. FAKE_CDK_LEAVE=instance,volume,spot-request
makes destroy leave those behind, tagged with the stack (leaks teardown must report); FAKE_CDK_FAIL=1 exits 1.
"""
from __future__ import annotations

import json
import os
import sys

STACK_TAG = "aws:cloudformation:stack-name"


def parse(argv: list[str]) -> tuple[str, dict, dict]:
    context, options, i = {}, {}, 2
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--context"):
            key, _, value = argv[i + 1].partition("=")
            context[key] = value
            i += 2
        elif arg in ("--outputs-file", "--require-approval", "--progress"):
            options[arg] = argv[i + 1]
            i += 2
        else:
            options.setdefault("args", []).append(arg)
            i += 1
    return argv[1], context, options


def names(stack: str) -> dict:
    low = stack.lower()
    return {"bucket": f"{low}-bucket", "asg": f"{stack}-group", "lt": f"{stack}-template"}


def deploy(context: dict, options: dict) -> None:
    import boto3

    stack = context["stack_name"]
    n = names(stack)
    s3, ec2 = boto3.client("s3"), boto3.client("ec2")
    asg, cfn = boto3.client("autoscaling"), boto3.client("cloudformation")
    region = boto3.session.Session().region_name
    existing = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if n["bucket"] not in existing:
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=n["bucket"], **location)
    types = context["instance_types"].split(",")
    zones = context["availability_zones"].split(",") if context.get("availability_zones") else [f"{region}a"]
    if not ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [n["lt"]]}])["LaunchTemplates"]:
        ec2.create_launch_template(LaunchTemplateName=n["lt"],
                                   LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": types[0]})
    if asg.describe_auto_scaling_groups(AutoScalingGroupNames=[n["asg"]])["AutoScalingGroups"]:
        asg.update_auto_scaling_group(AutoScalingGroupName=n["asg"], DesiredCapacity=int(context["nodes"]))
    else:
        asg.create_auto_scaling_group(
            AutoScalingGroupName=n["asg"], MinSize=0, MaxSize=max(1, int(context["nodes"])),
            DesiredCapacity=int(context["nodes"]), AvailabilityZones=zones,
            LaunchTemplate={"LaunchTemplateName": n["lt"], "Version": "$Latest"},
            Tags=[{"Key": STACK_TAG, "Value": stack, "PropagateAtLaunch": True, "ResourceId": n["asg"],
                   "ResourceType": "auto-scaling-group"}])
    outputs = {"Bucket": n["bucket"], "AutoScalingGroupName": n["asg"],
               "SiteUrl": f"https://{stack.lower()}.lambda-url.{region}.on.aws/",
               "SecurityGroupId": "sg-0123456789abcdef0", "Region": region}
    template = {"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
    try:
        cfn.describe_stacks(StackName=stack)
    except cfn.exceptions.ClientError:
        cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    if "--outputs-file" in options:
        with open(options["--outputs-file"], "w") as fh:
            json.dump({stack: outputs}, fh)
    print(f"{stack}: deploying... [fake]")
    print(f" ✅  {stack}")


def destroy(context: dict) -> None:
    import boto3

    stack = context["stack_name"]
    n = names(stack)
    ec2, asg, cfn = boto3.client("ec2"), boto3.client("autoscaling"), boto3.client("cloudformation")
    leave = set(filter(None, os.environ.get("FAKE_CDK_LEAVE", "").split(",")))
    tags = [{"Key": STACK_TAG, "Value": stack}]
    if "instance" in leave:
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
                          TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    if "volume" in leave:
        ec2.create_volume(AvailabilityZone=f"{boto3.session.Session().region_name}a", Size=500, VolumeType="gp3",
                          TagSpecifications=[{"ResourceType": "volume", "Tags": tags}])
    if "spot-request" in leave:
        ec2.request_spot_instances(InstanceCount=1, LaunchSpecification={"ImageId": "ami-12c6146b",
                                                                         "InstanceType": "g4dn.xlarge"},
                                   TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": tags}])
    if asg.describe_auto_scaling_groups(AutoScalingGroupNames=[n["asg"]])["AutoScalingGroups"]:
        asg.delete_auto_scaling_group(AutoScalingGroupName=n["asg"], ForceDelete=True)
    cfn.delete_stack(StackName=stack)
    if context.get("destroy_bucket") == "true":
        s3 = boto3.resource("s3")
        bucket = s3.Bucket(n["bucket"])
        bucket.objects.all().delete()
        bucket.delete()
    print(f"{stack}: destroyed [fake]")


def main() -> int:
    command, context, options = parse(sys.argv)
    with open(os.environ["FAKE_CDK_LOG"], "a") as fh:
        fh.write(json.dumps({"argv": sys.argv[1:], "command": command, "context": context, "cwd": os.getcwd(),
                             "region": os.environ.get("AWS_REGION")}) + "\n")
    if os.environ.get("FAKE_CDK_FAIL"):
        print("fake cdk failure: stack rollback", file=sys.stderr)
        return 1
    if command == "deploy":
        deploy(context, options)
    elif command == "destroy":
        destroy(context)
    else:
        print(f"fake cdk: unsupported command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
