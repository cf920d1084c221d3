"""A small IMDSv2 client (stdlib only, so the bootstrap can use it before any environment exists).

The endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT, the variable botocore uses, so the same code
reads the real instance metadata service on AWS and the local stand-in (job/testing/imds_server.py) in
tests. Every call has a short timeout: the watcher polls every few seconds and must never hang.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
IDENTITY_DOCUMENT_PATH = "/latest/dynamic/instance-identity/document"


class IMDSError(OSError):
    """The metadata service could not be reached or answered with an error (not a 404)."""


def endpoint_from_env() -> str:
    return (os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


class IMDS:
    def __init__(self, endpoint: str | None = None, *, timeout: float = 1.0, token_ttl_s: int = 21600,
                 refresh_margin_s: float | None = None):
        if not 1 <= int(token_ttl_s) <= 21600:
            raise ValueError(f"token_ttl_s={token_ttl_s}: IMDSv2 accepts 1..21600 seconds")
        self.endpoint = (endpoint or endpoint_from_env()).rstrip("/")
        self.timeout = timeout
        self.token_ttl_s = int(token_ttl_s)
        # Refresh a little before expiry so a request never carries a token that dies in flight.
        self.refresh_margin_s = (min(60.0, self.token_ttl_s / 10) if refresh_margin_s is None
                                 else refresh_margin_s)
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()
        # The metadata service is link-local: a proxy from the environment must never be used for it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- transport ---------------------------------------------------------------------------------
    def _open(self, request: urllib.request.Request) -> tuple[int, bytes]:
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read() or b""
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
            raise IMDSError(f"metadata service {self.endpoint} unreachable: {exc}") from exc
        except http.client.HTTPException as exc:  # a reply cut short or garbled (IncompleteRead, BadStatusLine)
            raise IMDSError(f"metadata service {self.endpoint} sent a broken reply: {exc!r}") from exc

    def _fetch_token(self) -> str:
        request = urllib.request.Request(self.endpoint + TOKEN_PATH, method="PUT",
                                         headers={TOKEN_TTL_HEADER: str(self.token_ttl_s)})
        status, body = self._open(request)
        if status != 200:
            raise IMDSError(f"metadata token request failed: HTTP {status} {body[:200]!r}")
        self._token = body.decode().strip()
        self._token_expires = time.monotonic() + self.token_ttl_s - self.refresh_margin_s
        log.debug("new IMDSv2 token, valid %ss", self.token_ttl_s)
        return self._token

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._token_expires:
                return self._fetch_token()
            return self._token

    def drop_token(self) -> None:
        with self._lock:
            self._token = None

    def get(self, path: str) -> str | None:
        """The body at `path`, or None on 404. A 401 (token expired or revoked) refreshes it once."""
        for attempt in (1, 2):
            request = urllib.request.Request(self.endpoint + path, headers={TOKEN_HEADER: self.token()})
            status, body = self._open(request)
            if status == 200:
                return body.decode("utf-8", errors="replace")
            if status == 404:
                return None
            if status == 401 and attempt == 1:
                log.info("metadata token rejected (expired?); fetching a new one")
                self.drop_token()
                continue
            raise IMDSError(f"GET {path}: HTTP {status} {body[:200]!r}")
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> dict | None:
        """The JSON object at `path`, or None on 404; anything but a JSON object is an IMDSError."""
        body = self.get(path)
        if body is None:
            return None
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise IMDSError(f"GET {path}: not JSON: {body[:200]!r}") from exc
        if not isinstance(value, dict):
            raise IMDSError(f"GET {path}: expected a JSON object, got {body[:200]!r}")
        return value

    # --- what the project reads ----------------------------------------------------------------------
    def spot_instance_action(self) -> dict | None:
        """None, or {"action": "terminate|stop|hibernate", "time": "2020-01-07T01:03:47Z"}."""
        notice = self.get_json(SPOT_ACTION_PATH)
        if notice is not None and not {"action", "time"} <= notice.keys():
            raise IMDSError(f"spot instance-action without action/time: {notice}")
        return notice

    def rebalance_recommendation(self) -> dict | None:
        """None, or {"noticeTime": "2020-01-07T01:03:47Z"}."""
        recommendation = self.get_json(REBALANCE_PATH)
        if recommendation is not None and "noticeTime" not in recommendation:
            raise IMDSError(f"rebalance recommendation without noticeTime: {recommendation}")
        return recommendation

    def instance_identity(self) -> dict:
        """{"instance_id", "instance_type", "az", "region"} from the identity document."""
        doc = self.get_json(IDENTITY_DOCUMENT_PATH)
        if doc is None:  # very old stand-ins serve only the meta-data tree
            az = self.get("/latest/meta-data/placement/availability-zone") or ""
            return {"instance_id": self.get("/latest/meta-data/instance-id"),
                    "instance_type": self.get("/latest/meta-data/instance-type"),
                    "az": az, "region": az[:-1] if az else None}
        return {"instance_id": doc.get("instanceId"), "instance_type": doc.get("instanceType"),
                "az": doc.get("availabilityZone"), "region": doc.get("region")}


def parse_time(stamp: str) -> float:
    """IMDS times ("2020-01-07T01:03:47Z", optionally with fractional seconds) as epoch seconds."""
    from datetime import datetime, timezone

    text = stamp.strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def format_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
