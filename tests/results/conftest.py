"""Fixtures for the results page: one moto bucket per module holding several runs written by RunRecords."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest

from job import s3 as s3mod
from tests.results.sample_runs import DEMO_PLAN, SegmentPlan, Written, write_hostile_run, write_malformed_run, write_run

LIVE_PLAN = [
    SegmentPlan("i-0live00000000001", "g5.2xlarge", "us-east-1d", 0.5110, 1150.0, 100, "interrupted"),
    SegmentPlan("i-0live00000000002", "g6.xlarge", "us-east-1f", 0.3372, 890.0, 150, "live"),
]


@dataclass
class Site:
    bucket: str
    s3: object
    demo: Written
    live: Written
    hostile: Written
    broken: Written
    live_t0: float


@pytest.fixture(scope="module")
def site(moto_server, tmp_path_factory):
    """demo-run (finished, 2 interruptions, checkpoint), live-run (training now on its 2nd instance),
    hostile-run (markup in every free-text field), broken-run (damaged records)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in moto_server.env.items():
            mp.setenv(key, value)
        s3mod._session.cache_clear()
        s3 = s3mod.client("s3")
        bucket = f"results-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        work = tmp_path_factory.mktemp("records")
        live_t0 = time.time() - 1000  # the live run's last record lands ~2 minutes before now
        site = Site(bucket, s3,
                    demo=write_run(s3, bucket, "demo-run", work, plan=DEMO_PLAN),
                    live=write_run(s3, bucket, "live-run", work, plan=LIVE_PLAN, t0=live_t0, epochs=4),
                    hostile=write_hostile_run(s3, bucket, "hostile-run", work),
                    broken=write_malformed_run(s3, bucket, "broken-run", work),
                    live_t0=live_t0)
        yield site
    s3mod._session.cache_clear()


@pytest.fixture
def lambda_env(site, aws, monkeypatch):
    """The environment the CDK construct gives the function, and a fresh module-level S3 client."""
    from infra.results_site.runtime import handler

    monkeypatch.setenv("BUCKET_NAME", site.bucket)
    monkeypatch.setenv("RECORDS_PREFIX", "runs/")
    monkeypatch.setattr(handler, "_client", None)
    return site


def url_event(path: str, method: str = "GET", query: dict | None = None) -> dict:
    """A Lambda function URL request event, payload format version 2.0."""
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {"host": "abc123.lambda-url.us-east-1.on.aws", "user-agent": "pytest",
                    "accept": "text/html", "x-forwarded-proto": "https"},
        **({"queryStringParameters": query} if query else {}),
        "requestContext": {
            "accountId": "anonymous", "apiId": "abc123", "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123", "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": "15/Jun/2025:15:06:40 +0000", "timeEpoch": 1750000000000,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "pytest"},
        },
        "isBase64Encoded": False,
    }


def invoke(path: str, method: str = "GET", query: dict | None = None) -> dict:
    from infra.results_site.runtime import handler

    response = handler.handler(url_event(path, method, query), None)
    assert set(response) >= {"statusCode", "headers", "body"}
    return response
