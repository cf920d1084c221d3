"""The training instances' role: read/write on the project bucket, the HF token, a few EC2/Auto Scaling reads."""
from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Stack, Validations, aws_iam as iam, aws_s3 as s3
from constructs import Construct

from infra.config import SSM_PARAMETER_PATH
from infra.nag import wildcard_finding

# Object-level actions the job needs: packages/datasets/checkpoints/records are read and written; deletes
# serve checkpoint pruning and lease release; the multipart actions serve boto3's TransferManager.
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                  "s3:ListMultipartUploadParts"]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
# Reads for the run records (instance type, AZ, spot price) and the group's state. These APIs do not support
# resource-level permissions, so their resource is necessarily "*".
DESCRIBE_ACTIONS = ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeSpotPriceHistory",
                    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances"]


class InstanceRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        objects_arn = bucket.arn_for_objects("*")
        parameters_arn = stack.format_arn(service="ssm", resource="parameter",
                                          resource_name=SSM_PARAMETER_PATH.strip("/") + "/*")
        keys_arn = stack.format_arn(service="kms", resource="key", resource_name="*")

        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                             description="Spot training instances: project bucket, HF token, describe calls")
        self.policy = iam.Policy(self, "Policy", roles=[self.role], statements=[
            iam.PolicyStatement(sid="BucketObjects", actions=OBJECT_ACTIONS, resources=[objects_arn]),
            iam.PolicyStatement(sid="Bucket", actions=BUCKET_ACTIONS, resources=[bucket.bucket_arn]),
            iam.PolicyStatement(sid="HubToken", actions=["ssm:GetParameter", "ssm:GetParameters"],
                                resources=[parameters_arn]),
            # SecureString parameters are encrypted with the AWS managed key aws/ssm, decrypted through SSM.
            iam.PolicyStatement(sid="HubTokenDecrypt", actions=["kms:Decrypt"], resources=[keys_arn],
                                conditions={"StringEquals": {"kms:ViaService": f"ssm.{Aws.REGION}.amazonaws.com"},
                                            "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/aws/ssm"}}),
            iam.PolicyStatement(sid="DescribeReads", actions=DESCRIBE_ACTIONS, resources=["*"]),
        ])
        Validations.of(self.policy).acknowledge(
            Acknowledgment(id=wildcard_finding(objects_arn, self),
                           reason="Objects of the project bucket only: the job writes keys under every prefix "
                                  "(packages, datasets, checkpoints, runs) named by job/layout.py."),
            Acknowledgment(id=wildcard_finding(parameters_arn, self),
                           reason="Parameters under /spot-resnet/ only: the operator's Hugging Face token."),
            Acknowledgment(id=wildcard_finding(keys_arn, self),
                           reason="kms:Decrypt only through SSM (kms:ViaService) and only for the aws/ssm key "
                                  "(kms:ResourceAliases); the key id is account-specific and unknown at synth."),
            Acknowledgment(id="AwsSolutions-IAM5[Resource::*]",
                           reason="ec2:Describe* and autoscaling:Describe* support no resource-level permissions; "
                                  "the statement grants reads only."),
        )
        self.instance_profile = iam.InstanceProfile(self, "InstanceProfile", role=self.role)
