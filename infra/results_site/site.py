"""Results site: a Lambda function behind a public function URL that renders the run records as HTML.

The handler lives beside this construct in runtime/ (stdlib + boto3 only) and reads the bucket through a role
that can only read `runs/*` (records) and `checkpoints/*` (for presigned download links).
"""
from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations, aws_iam as iam, aws_lambda as lambda_
from aws_cdk import aws_logs as logs, aws_s3 as s3
from constructs import Construct

from infra.nag import wildcard_finding

RUNTIME_DIR = Path(__file__).with_name("runtime")
RECORDS_PREFIX = "runs/"
CHECKPOINTS_PREFIX = "checkpoints/"


class ResultsSite(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Results page: read-only on the run records")
        records_arn = bucket.arn_for_objects(RECORDS_PREFIX + "*")
        checkpoints_arn = bucket.arn_for_objects(CHECKPOINTS_PREFIX + "*")
        policy = iam.Policy(self, "Policy", roles=[self.role], statements=[
            iam.PolicyStatement(sid="ReadRecords", actions=["s3:GetObject"], resources=[records_arn, checkpoints_arn]),
            iam.PolicyStatement(sid="ListRecords", actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [RECORDS_PREFIX, RECORDS_PREFIX + "*"]}}),
            iam.PolicyStatement(sid="Logs", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                resources=[log_group.log_group_arn]),
        ])
        Validations.of(policy).acknowledge(
            Acknowledgment(id=wildcard_finding(records_arn, self),
                           reason="Read-only on the run records prefix, which the page lists."),
            Acknowledgment(id=wildcard_finding(checkpoints_arn, self),
                           reason="Read-only on checkpoints, so the page can presign download links."),
        )
        self.function = lambda_.Function(
            self, "Function",
            runtime=lambda_.Runtime.PYTHON_3_12,
            code=lambda_.Code.from_asset(str(RUNTIME_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler",
            role=self.role,
            log_group=log_group,
            memory_size=256,
            timeout=Duration.seconds(15),
            environment={"BUCKET_NAME": bucket.bucket_name, "RECORDS_PREFIX": RECORDS_PREFIX},
            description="Results page of the spot ResNet-50 runs",
        )
        # Public on purpose: a read-only page of run records for whoever has the URL, viewable from a phone
        # without AWS credentials. The role above is what limits it (GetObject on runs/ and checkpoints/ only).
        # The AwsSolutions pack has no finding for this; the Serverless/NIST packs' LambdaFunctionUrlAuth would.
        self.url = self.function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.NONE)
        Validations.of(self.function).acknowledge(Acknowledgment(
            id="AwsSolutions-L1",
            reason="Pinned to Python 3.12, the runtime the handler is tested against; bumped deliberately.",
        ))
