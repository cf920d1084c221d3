"""Lambda function URL handler (payload format 2.0): the live results page.

Routes (GET and HEAD only):
  /                  run list (HTML)          /api/runs         run list (JSON)
  /runs/<id>         one run (HTML)           /api/runs/<id>    one run (JSON)
anything else is a 404 page; a malformed run id is a 400 that states the rule.

Cache-Control, and why:
  - HTML pages: `private, max-age=30` while a run is active. Records are flushed to S3 about every 30 s, so
    a fresher page shows nothing new; `private` because the run page embeds a presigned checkpoint URL
    that no shared cache should keep. A finished/failed run changes no more: `max-age=300`, still well
    inside the 15-minute link expiry, so a cached page never offers a dead link.
  - JSON: `no-store`. Tools (scripts, `launcher status`) poll it to decide what to do next and must see
    the current state; a Lambda call per poll costs nothing worth saving.
  - Errors: `no-store`, so a transient failure or a run not created yet is not remembered.
"""
from __future__ import annotations

import json
import logging
import os
import time

if __package__:
    from . import runs, views
    from .render import CONTENT_SECURITY_POLICY, error_page
else:  # top-level in the Lambda bundle: the runtime imports `handler`
    import runs
    import views
    from render import CONTENT_SECURITY_POLICY, error_page

log = logging.getLogger(__name__)

CACHE_ACTIVE = "private, max-age=30"
CACHE_FINISHED = "private, max-age=300"
CACHE_NONE = "no-store"
_client = None


def s3_client():
    """One client per container (reused across invocations); endpoint and region from the environment."""
    global _client
    if _client is None:
        import boto3
        from botocore.config import Config

        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        _client = boto3.client("s3", region_name=region, config=Config(
            signature_version="s3v4", retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=3, read_timeout=10))
    return _client


def _headers(content_type: str, cache: str) -> dict:
    return {
        "content-type": content_type,
        "cache-control": cache,
        "content-security-policy": CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }


def html_response(status: int, body: str, cache: str) -> dict:
    return {"statusCode": status, "headers": _headers("text/html; charset=utf-8", cache), "body": body,
            "isBase64Encoded": False}


def json_response(status: int, value, cache: str = CACHE_NONE) -> dict:
    body = json.dumps(value, sort_keys=True, allow_nan=False)
    return {"statusCode": status, "headers": _headers("application/json", cache), "body": body,
            "isBase64Encoded": False}


def error_response(status: int, title: str, message: str, api: bool) -> dict:
    if api:
        return json_response(status, {"error": title, "message": message})
    return html_response(status, error_page(status, title, message), CACHE_NONE)


def route(path: str) -> tuple[str, str | None] | None:
    """(view, run id or None) for a raw path, or None when no route matches. The id is not validated yet."""
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    parts = path.split("/")[1:]
    if parts == [""]:
        return "list", None
    if parts == ["api", "runs"]:
        return "api-list", None
    if len(parts) == 2 and parts[0] == "runs":
        return "run", parts[1]
    if len(parts) == 3 and parts[:2] == ["api", "runs"]:
        return "api-run", parts[2]
    return None


def respond(s3, bucket: str, path: str, *, prefix: str = runs.DEFAULT_RECORDS_PREFIX, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    matched = route(path)
    api = path.startswith("/api/")
    if matched is None:
        return error_response(404, "Not found", f"There is no page at {path}. The run list is at /.", api)
    view, run = matched
    if run is not None and not runs.valid_run_id(run):
        return error_response(400, "Invalid run id", f"{run!r} is not a run id: run ids are 1-63 lowercase letters, "
                              "digits and '-', starting with a letter or digit.", api)
    if view in ("list", "api-list"):
        summaries, notices = views.run_list(s3, bucket, prefix=prefix, now=now)
        if view == "api-list":
            return json_response(200, views.list_json(summaries, notices))
        return html_response(200, views.list_html(summaries, notices, now=now), CACHE_ACTIVE)
    page = views.run_view(s3, bucket, run, prefix=prefix, now=now)
    if not page.exists:
        return error_response(404, "Run not found", f"No run named {run} has records in this bucket.", api)
    if view == "api-run":
        return json_response(200, page.json())
    cache = CACHE_ACTIVE if page.summary.active or page.summary.state == "interrupted" else CACHE_FINISHED
    return html_response(200, page.html(now=now), cache)


def handler(event, context):
    from botocore.exceptions import BotoCoreError, ClientError

    method = ((event.get("requestContext") or {}).get("http") or {}).get("method", "GET").upper()
    path = event.get("rawPath") or "/"
    api = path.startswith("/api/")
    if method not in ("GET", "HEAD"):
        response = error_response(405, "Method not allowed", f"{method} is not supported: this site is read-only.", api)
        response["headers"]["allow"] = "GET, HEAD"
        return response
    bucket = os.environ.get("BUCKET_NAME")
    if not bucket:
        return error_response(500, "Not configured", "BUCKET_NAME is not set: deploy the function with the "
                              "stack's results-site construct, which sets it.", api)
    prefix = os.environ.get("RECORDS_PREFIX", runs.DEFAULT_RECORDS_PREFIX)
    try:
        runs.check_prefix(prefix)
    except ValueError as exc:
        return error_response(500, "Not configured", f"RECORDS_PREFIX: {exc}.", api)
    try:
        response = respond(s3_client(), bucket, path, prefix=prefix)
    except (BotoCoreError, ClientError) as exc:
        # S3 itself failed (throttling, permissions on the bucket): say so, and leave the trace in the log.
        log.exception("reading run records for %s failed", path)
        response = error_response(502, "Run records unavailable", f"Reading the run records from S3 failed: {exc}. "
                                  "Try again in a minute.", api)
    if method == "HEAD":
        response["body"] = ""
    return response
