"""Storage: the one bucket for job packages, datasets, checkpoints and run records (see job/layout.py)."""
from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations, aws_s3 as s3
from constructs import Construct


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, destroy_bucket: bool = False) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self, "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(
                id="abort-incomplete-multipart-uploads",
                # A checkpoint or shard upload cut off by a spot reclaim leaves parts that are billed forever.
                abort_incomplete_multipart_upload_after=Duration.days(3),
            )],
            # Checkpoints and prepared shards are hours of GPU time: keep them unless teardown says otherwise.
            removal_policy=RemovalPolicy.DESTROY if destroy_bucket else RemovalPolicy.RETAIN,
            auto_delete_objects=destroy_bucket,
        )
        Validations.of(self.bucket).acknowledge(Acknowledgment(
            id="AwsSolutions-S1",
            reason="Server access logs are off: the bucket is private to one operator, every writer records what it "
                   "wrote in the run records (runs/<run>/records/), and a log bucket would outlive the stack and bill.",
        ))
