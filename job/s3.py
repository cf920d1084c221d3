"""One way to make AWS clients: botocore's own retries, endpoints from the environment.

boto3 honours AWS_ENDPOINT_URL by itself, so the same code talks to AWS or to the local moto server.
"""
from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=None)
def _session():
    import boto3

    return boto3.session.Session()


def client(service: str = "s3", *, max_attempts: int = 8, connect_timeout: float = 5, read_timeout: float = 60,
           region: str | None = None):
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": max_attempts, "mode": "adaptive"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _session().client(service, region_name=region, config=config)


def transfer_config(concurrency: int = 16, chunk_mb: int = 16):
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=chunk_mb * 1024 * 1024,
        multipart_chunksize=chunk_mb * 1024 * 1024,
        max_concurrency=concurrency,
        use_threads=True,
    )


def get_json(s3, bucket: str, key: str):
    """The object parsed as JSON, or None when it does not exist."""
    import json

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def put_json(s3, bucket: str, key: str, value, **extra) -> dict:
    import json

    return s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(value, sort_keys=True).encode(), ContentType="application/json", **extra
    )


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys
