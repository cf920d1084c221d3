"""The synthesized template has every property the issue asks for (one shared synth per variant)."""
from __future__ import annotations

import json

from infra.config import DEFAULT_AMI_PARAMETER
from infra.stack import OUTPUT_KEYS
from launcher.catalog import DEFAULT_INSTANCE_TYPES

from .conftest import OPERATOR_CIDR


def _statements(policy_resource: dict) -> list[dict]:
    return policy_resource["Properties"]["PolicyDocument"]["Statement"]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _role_policies(synth, role_principal: str) -> list[dict]:
    """Statements of every AWS::IAM::Policy attached to the role assumed by `role_principal`."""
    roles = {k for k, r in synth.resources("AWS::IAM::Role").items()
             if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"] == role_principal}
    assert len(roles) == 1, roles
    role = roles.pop()
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements += _statements(policy)
    assert statements, f"no policy attached to {role}"
    assert "ManagedPolicyArns" not in synth.template["Resources"][role]["Properties"]
    return statements


def _bucket_id(synth) -> str:
    (bucket_id,) = synth.resources("AWS::S3::Bucket")
    return bucket_id


def _user_data(synth) -> str:
    """The user data with CloudFormation references shown as {Ref}/{GetAtt} markers."""
    data = synth.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    if isinstance(data, str):
        return data
    return "".join(p if isinstance(p, str) else "{" + json.dumps(p) + "}" for p in data["Fn::Join"][1])


# ---- compute -------------------------------------------------------------------------------------------

def test_group_is_all_spot_across_default_types_with_capacity_rebalance(synthesized):
    group = synthesized.one("AWS::AutoScaling::AutoScalingGroup")["Properties"]
    policy = group["MixedInstancesPolicy"]
    assert policy["InstancesDistribution"] == {
        "OnDemandBaseCapacity": 0, "OnDemandPercentageAboveBaseCapacity": 0,
        "SpotAllocationStrategy": "price-capacity-optimized"}
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == list(DEFAULT_INSTANCE_TYPES)
    assert {"g4dn", "g5", "g6"} == {t.split(".")[0] for t in DEFAULT_INSTANCE_TYPES}
    assert group["CapacityRebalance"] is True
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == ("1", "1", "1")
    (template_id,) = synthesized.resources("AWS::EC2::LaunchTemplate")
    assert policy["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateId"] == {"Ref": template_id}


def test_group_spans_a_public_subnet_in_every_zone(synthesized, variant):
    for synth, zones in ((synthesized, [{"Fn::Select": [i, {"Fn::GetAZs": ""}]} for i in range(3)]),
                         (variant, ["eu-west-1a", "eu-west-1b", "eu-west-1c"])):
        subnets = synth.resources("AWS::EC2::Subnet")
        assert sorted(json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets.values()) == \
            sorted(json.dumps(z) for z in zones)
        assert all(s["Properties"]["MapPublicIpOnLaunch"] is True for s in subnets.values())
        group = synth.one("AWS::AutoScaling::AutoScalingGroup")["Properties"]
        assert sorted(r["Ref"] for r in group["VPCZoneIdentifier"]) == sorted(subnets)
        (gateway,) = synth.resources("AWS::EC2::InternetGateway")
        routes = synth.resources("AWS::EC2::Route").values()
        assert len(routes) == len(subnets)
        assert all(r["Properties"]["GatewayId"] == {"Ref": gateway} and
                   r["Properties"]["DestinationCidrBlock"] == "0.0.0.0/0" for r in routes)


def test_variant_context_changes_capacity_strategy_and_types(variant):
    group = variant.one("AWS::AutoScaling::AutoScalingGroup")["Properties"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == ("0", "0", "0")
    distribution = group["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["SpotAllocationStrategy"] == "capacity-optimized"
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    assert [o["InstanceType"] for o in group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]] == \
        ["g6.xlarge", "g5.xlarge"]


def test_launch_template_requires_imdsv2_and_encrypts_gp3_root(synthesized):
    data = synthesized.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 2}
    assert data["BlockDeviceMappings"] == [{"DeviceName": "/dev/sda1", "Ebs": {
        "DeleteOnTermination": True, "Encrypted": True, "VolumeSize": 100, "VolumeType": "gp3"}}]
    assert "InstanceType" not in data  # the group's overrides choose the type
    assert "KeyName" not in data
    (sg_id,) = synthesized.resources("AWS::EC2::SecurityGroup")
    assert data["SecurityGroupIds"] == [{"Fn::GetAtt": [sg_id, "GroupId"]}]
    profile_id = data["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0]
    profile = synthesized.template["Resources"][profile_id]
    (role_ref,) = profile["Properties"]["Roles"]
    role = synthesized.template["Resources"][role_ref["Ref"]]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_variant_adds_encrypted_gp3_data_volume_and_key_pair(variant):
    data = variant.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]
    assert {"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True, "Encrypted": True, "VolumeSize": 200,
                                              "VolumeType": "gp3"}} in data["BlockDeviceMappings"]
    assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"])
    assert data["KeyName"] == "my-laptop"


def test_ami_is_resolved_from_public_ssm_parameter_at_deploy_time(synthesized, variant):
    for synth, name in ((synthesized, DEFAULT_AMI_PARAMETER),
                        (variant, "/aws/service/deeplearning/ami/x86_64/other/latest/ami-id")):
        image = synth.one("AWS::EC2::LaunchTemplate")["Properties"]["LaunchTemplateData"]["ImageId"]
        parameter = synth.template["Parameters"][image["Ref"]]
        assert parameter == {"Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>", "Default": name}


def test_user_data_mounts_data_and_runs_the_bootstrap(synthesized):
    text = _user_data(synthesized)
    bucket_ref = "{" + json.dumps({"Ref": _bucket_id(synthesized)}) + "}"
    assert f'BUCKET="{bucket_ref}"' in text
    assert 'REGION="{{"Ref": "AWS::Region"}}"' in text
    assert "cat > /etc/profile.d/spot-resnet.sh" in text
    for line in ("export SPOT_BUCKET=$BUCKET", "export SPOT_DATA_DIR=$DATA_DIR", "export AWS_DEFAULT_REGION=$REGION"):
        assert line in text
    assert 'DATA_DIR="/data"' in text
    assert "mdadm --create" in text and "--level=0" in text
    assert 'ACTIVE_RUN_KEY="runs/active.json"' in text
    assert 'as_ubuntu python3 -m job.bootstrap --bucket "$BUCKET" --run "$RUN"' in text
    assert "PYTHONPATH=\"$PKG_DIR\"" in text and 'PKG_DIR="$DATA_DIR/pkg/$RUN"' in text
    assert "/var/log/spot-resnet-bootstrap.log" in text
    assert "@@" not in text


# ---- network -------------------------------------------------------------------------------------------

def test_security_group_admits_only_ssh_from_operator_cidr(synthesized, variant):
    props = synthesized.one("AWS::EC2::SecurityGroup")["Properties"]
    assert props["SecurityGroupIngress"] == [{
        "CidrIp": OPERATOR_CIDR, "Description": "SSH from the operator (context operator_cidr)",
        "FromPort": 22, "IpProtocol": "tcp", "ToPort": 22}]
    assert synthesized.resources("AWS::EC2::SecurityGroupIngress") == {}
    (rule,) = variant.one("AWS::EC2::SecurityGroup")["Properties"]["SecurityGroupIngress"]
    assert (rule["CidrIpv6"], rule["FromPort"], rule["ToPort"], rule["IpProtocol"]) == ("2001:db8:1234::/48", 22, 22, "tcp")
    assert "CidrIp" not in rule


def test_no_nat_gateway_and_an_s3_gateway_endpoint(synthesized):
    assert synthesized.resources("AWS::EC2::NatGateway") == {}
    assert synthesized.resources("AWS::EC2::EIP") == {}
    endpoint = synthesized.one("AWS::EC2::VPCEndpoint")["Properties"]
    assert endpoint["VpcEndpointType"] == "Gateway"
    assert endpoint["ServiceName"] == {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]}
    assert sorted(r["Ref"] for r in endpoint["RouteTableIds"]) == sorted(synthesized.resources("AWS::EC2::RouteTable"))


# ---- storage -------------------------------------------------------------------------------------------

def test_bucket_is_encrypted_private_tls_only_and_aborts_multipart_uploads(synthesized):
    bucket = synthesized.one("AWS::S3::Bucket")
    props = bucket["Properties"]
    assert props["BucketEncryption"] == {"ServerSideEncryptionConfiguration": [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    (deny,) = _statements(synthesized.one("AWS::S3::BucketPolicy"))
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] == {"AWS": "*"} and deny["Action"] == "s3:*"


def test_bucket_is_retained_by_default_and_destroyed_only_with_the_flag(synthesized, variant):
    kept = synthesized.one("AWS::S3::Bucket")
    assert (kept["DeletionPolicy"], kept["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert synthesized.resources("Custom::S3AutoDeleteObjects") == {}
    gone = variant.one("AWS::S3::Bucket")
    assert (gone["DeletionPolicy"], gone["UpdateReplacePolicy"]) == ("Delete", "Delete")
    (auto_delete,) = variant.resources("Custom::S3AutoDeleteObjects").values()
    assert auto_delete["Properties"]["BucketName"] == {"Ref": _bucket_id(variant)}


# ---- IAM -----------------------------------------------------------------------------------------------

def test_instance_role_is_scoped_to_the_bucket(synthesized):
    statements = _role_policies(synthesized, "ec2.amazonaws.com")
    arn = {"Fn::GetAtt": [_bucket_id(synthesized), "Arn"]}
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["BucketObjects"]["Resource"] == {"Fn::Join": ["", [arn, "/*"]]}
    assert set(_as_list(by_sid["BucketObjects"]["Action"])) == {
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
    assert by_sid["Bucket"]["Resource"] == arn
    for statement in statements:
        actions = _as_list(statement["Action"])
        assert statement["Effect"] == "Allow"
        assert "*" not in actions and not any(a.endswith(":*") for a in actions)
        if any(a.startswith("s3:") for a in actions):
            assert all(r in (arn, {"Fn::Join": ["", [arn, "/*"]]}) for r in _as_list(statement["Resource"])), statement
        if statement["Resource"] == "*":
            assert all(":Describe" in a for a in actions), statement


def test_instance_role_reads_the_hub_token_parameter_path_only(synthesized):
    by_sid = {s["Sid"]: s for s in _role_policies(synthesized, "ec2.amazonaws.com")}
    resource = json.dumps(by_sid["HubToken"]["Resource"])
    assert ":parameter/spot-resnet/*" in resource
    assert set(_as_list(by_sid["HubToken"]["Action"])) == {"ssm:GetParameter", "ssm:GetParameters"}
    decrypt = by_sid["HubTokenDecrypt"]
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Condition"]["ForAnyValue:StringEquals"] == {"kms:ResourceAliases": "alias/aws/ssm"}
    assert "kms:ViaService" in decrypt["Condition"]["StringEquals"]


def test_results_site_role_reads_only_records_and_checkpoints(synthesized):
    statements = _role_policies(synthesized, "lambda.amazonaws.com")
    arn = {"Fn::GetAtt": [_bucket_id(synthesized), "Arn"]}
    s3_statements = [s for s in statements if any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    actions = {a for s in s3_statements for a in _as_list(s["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket"}
    by_sid = {s["Sid"]: s for s in s3_statements}
    assert by_sid["ReadRecords"]["Resource"] == [{"Fn::Join": ["", [arn, "/runs/*"]]},
                                                 {"Fn::Join": ["", [arn, "/checkpoints/*"]]}]
    assert by_sid["ListRecords"]["Resource"] == arn
    assert by_sid["ListRecords"]["Condition"] == {"StringLike": {"s3:prefix": ["runs/", "runs/*"]}}
    (logs,) = [s for s in statements if s["Sid"] == "Logs"]
    assert logs["Resource"] != "*"


def test_no_allow_statement_anywhere_grants_every_action(synthesized, variant):
    for synth in (synthesized, variant):
        for policy in synth.resources("AWS::IAM::Policy").values():
            for statement in _statements(policy):
                assert "*" not in _as_list(statement["Action"]), statement


# ---- results site --------------------------------------------------------------------------------------

def test_results_site_is_a_python_lambda_behind_a_public_function_url(synthesized):
    functions = {k: f for k, f in synthesized.resources("AWS::Lambda::Function").items()
                 if f["Properties"].get("Handler") == "handler.handler"}
    assert len(functions) == 1
    function_id, function = next(iter(functions.items()))
    props = function["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Environment"]["Variables"] == {"BUCKET_NAME": {"Ref": _bucket_id(synthesized)},
                                                 "RECORDS_PREFIX": "runs/"}
    url = synthesized.one("AWS::Lambda::Url")["Properties"]
    assert url == {"AuthType": "NONE", "TargetFunctionArn": {"Fn::GetAtt": [function_id, "Arn"]}}
    permissions = {p["Properties"]["Action"]: p["Properties"] for p in synthesized.resources("AWS::Lambda::Permission").values()}
    assert permissions["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert permissions["lambda:InvokeFunctionUrl"]["Principal"] == "*"
    assert permissions["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True
    # The asset is the runtime folder (the handler module is in it).
    asset = synthesized.outdir / f"asset.{props['Code']['S3Key'].split('.')[0]}"
    assert (asset / "handler.py").is_file()
    assert not list(asset.rglob("__pycache__"))


# ---- cost guard, interruption events, outputs ------------------------------------------------------------

def test_cost_guard_emails_only_when_an_address_is_given(synthesized, variant):
    budget = synthesized.one("AWS::Budgets::Budget")["Properties"]
    assert budget["Budget"] == {"BudgetLimit": {"Amount": 100, "Unit": "USD"}, "BudgetType": "COST", "TimeUnit": "MONTHLY"}
    alerts = budget["NotificationsWithSubscribers"]
    assert {(a["Notification"]["NotificationType"], a["Notification"]["Threshold"]) for a in alerts} == {
        ("FORECASTED", 100), ("ACTUAL", 80), ("ACTUAL", 100)}
    assert all(a["Subscribers"] == [{"Address": "ops@example.com", "SubscriptionType": "EMAIL"}] for a in alerts)
    assert variant.resources("AWS::Budgets::Budget") == {}


def test_interruption_warnings_and_rebalance_events_go_to_a_log_group(synthesized):
    rule = synthesized.one("AWS::Events::Rule")["Properties"]
    assert rule["EventPattern"] == {"source": ["aws.ec2"], "detail-type": [
        "EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]}
    assert rule["State"] == "ENABLED"
    log_groups = synthesized.resources("AWS::Logs::LogGroup")
    (log_id,) = [k for k, g in log_groups.items() if "spot-interruptions" in json.dumps(g["Properties"].get("LogGroupName"))]
    assert log_groups[log_id]["Properties"]["RetentionInDays"] == 90
    (target,) = rule["Targets"]
    assert {"Ref": log_id} in target["Arn"]["Fn::Join"][1]
    policy = json.dumps(synthesized.one("AWS::Logs::ResourcePolicy")["Properties"]["PolicyDocument"])
    assert "events.amazonaws.com" in policy and "logs:PutLogEvents" in policy and log_id in policy


def test_outputs_name_bucket_group_site_security_group_and_region(synthesized):
    outputs = synthesized.template["Outputs"]
    assert set(OUTPUT_KEYS) <= set(outputs)
    assert outputs["Bucket"]["Value"] == {"Ref": _bucket_id(synthesized)}
    (group_id,) = synthesized.resources("AWS::AutoScaling::AutoScalingGroup")
    assert outputs["AutoScalingGroupName"]["Value"] == {"Ref": group_id}
    (url_id,) = synthesized.resources("AWS::Lambda::Url")
    assert outputs["SiteUrl"]["Value"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}
    (sg_id,) = synthesized.resources("AWS::EC2::SecurityGroup")
    assert outputs["SecurityGroupId"]["Value"] == {"Fn::GetAtt": [sg_id, "GroupId"]}
    assert outputs["Region"]["Value"] == {"Ref": "AWS::Region"}


def test_stack_name_comes_from_context(synthesized, variant):
    assert synthesized.stack.stack_name == "SpotResnet"
    assert variant.stack.stack_name == "SpotResnetVariant"


def test_instances_and_bucket_carry_the_stack_tag(synthesized):
    from infra.stack import PROJECT_TAG

    group = synthesized.one("AWS::AutoScaling::AutoScalingGroup")["Properties"]
    assert {"Key": PROJECT_TAG, "Value": "SpotResnet", "PropagateAtLaunch": True} in group["Tags"]
    assert {"Key": PROJECT_TAG, "Value": "SpotResnet"} in synthesized.one("AWS::S3::Bucket")["Properties"]["Tags"]


def test_every_zone_of_a_six_zone_region_gets_its_own_public_subnet():
    """`launcher up` passes all of us-east-1's six zones: each gets a public subnet with its own CIDR block
    inside the VPC (the /20 subnets leave room for 16 zones)."""
    import ipaddress

    import aws_cdk as cdk
    from aws_cdk.assertions import Match, Template

    from infra.network import Network

    zones = [f"us-east-1{letter}" for letter in "abcdef"]
    stack = cdk.Stack(cdk.App(), "Zones")
    Network(stack, "Network", operator_cidr=OPERATOR_CIDR, availability_zones=tuple(zones))
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::Subnet", 6)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    subnets = template.find_resources("AWS::EC2::Subnet", {"Properties": {"MapPublicIpOnLaunch": True,
                                                                          "AvailabilityZone": Match.any_value()}})
    assert sorted(s["Properties"]["AvailabilityZone"] for s in subnets.values()) == zones
    blocks = [ipaddress.ip_network(s["Properties"]["CidrBlock"]) for s in subnets.values()]
    vpc = ipaddress.ip_network("10.40.0.0/16")
    assert all(b.subnet_of(vpc) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
