"""Read one run's records from S3 (layout in docs/CONTRACTS.md), tolerating anything missing or malformed.

Nothing here raises on bad data: each problem becomes a human-readable notice and the rest of the run
is still shown. Only S3 failures other than "not there" / "not allowed" propagate.
"""
from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Same rule as job.layout.check_run_name (copied: this folder is deployed alone and may not import job/;
# tests/results/test_runs.py checks that both accept and reject the same names).
RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

DEFAULT_RECORDS_PREFIX = "runs/"
CHECKPOINTS_PREFIX = "checkpoints/"
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden"}
MAX_NOTICES_PER_FILE = 3


def valid_run_id(run) -> bool:
    # fullmatch, not match: `$` would also accept a trailing newline.
    return isinstance(run, str) and RUN_ID.fullmatch(run) is not None


def check_prefix(prefix: str) -> str:
    if not prefix or not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix:
        raise ValueError(f"records prefix {prefix!r} must be a relative S3 prefix ending in '/', e.g. 'runs/'")
    return prefix


# Keys: mirror job/layout.py (tests compare them).
def spec_key(run: str, prefix: str = DEFAULT_RECORDS_PREFIX) -> str:
    return f"{prefix}{run}/spec.json"


def state_key(run: str, prefix: str = DEFAULT_RECORDS_PREFIX) -> str:
    return f"{prefix}{run}/state.json"


def records_prefix(run: str, prefix: str = DEFAULT_RECORDS_PREFIX) -> str:
    return f"{prefix}{run}/records/"


def latest_checkpoint_key(run: str) -> str:
    return f"{CHECKPOINTS_PREFIX}{run}/latest.json"


@dataclass
class RunHistory:
    """Everything the page knows about one run. Records are sorted by time and carry `_segment`."""

    run: str
    spec: dict | None = None
    state: dict | None = None
    latest_checkpoint: dict | None = None
    events: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return bool(self.spec or self.state or self.segments or self.events or self.metrics)


def _error_code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _get_bytes(s3, bucket: str, key: str, notices: list[str], denied_means_missing: bool = False) -> bytes | None:
    """The object's bytes; None (with a notice when access is denied) when it cannot be read."""
    from botocore.exceptions import ClientError

    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = _error_code(exc)
        if code in _MISSING_CODES or (denied_means_missing and code in _DENIED_CODES):
            return None
        if code in _DENIED_CODES:
            notices.append(f"{key}: access denied, so it is left out (check the page's IAM role)")
            return None
        raise


def _get_json_object(s3, bucket: str, key: str, notices: list[str], denied_means_missing: bool = False) -> dict | None:
    body = _get_bytes(s3, bucket, key, notices, denied_means_missing)
    if body is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        notices.append(f"{key}: not valid JSON ({exc.__class__.__name__}), so it is left out")
        return None
    if not isinstance(value, dict):
        notices.append(f"{key}: expected a JSON object, found {type(value).__name__}, so it is left out")
        return None
    return value


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_jsonl(body: bytes, key: str, segment: str, notices: list[str]) -> list[dict]:
    """Valid records of one JSONL object; bad lines are skipped and summarised in one notice per file."""
    records: list[dict] = []
    bad: list[str] = []
    text = body.decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(f"line {number}: not valid JSON")
            continue
        if not isinstance(record, dict):
            bad.append(f"line {number}: not a JSON object")
        elif not _is_time(record.get("time")):
            bad.append(f"line {number}: no numeric 'time'")
        elif not isinstance(record.get("type"), str):
            bad.append(f"line {number}: no 'type'")
        else:
            records.append({**record, "_segment": segment})
    if bad:
        shown = "; ".join(bad[:MAX_NOTICES_PER_FILE])
        more = f" and {len(bad) - MAX_NOTICES_PER_FILE} more" if len(bad) > MAX_NOTICES_PER_FILE else ""
        notices.append(f"{key}: skipped {len(bad)} malformed line(s) ({shown}{more})")
    return records


def _list(s3, bucket: str, prefix: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    prefixes: list[str] = []
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
        prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return keys, prefixes


def list_run_ids(s3, bucket: str, prefix: str = DEFAULT_RECORDS_PREFIX) -> list[str]:
    """Run ids under the records prefix (names that fail the run-id rule are not runs and are ignored)."""
    check_prefix(prefix)
    _, prefixes = _list(s3, bucket, prefix, delimiter="/")
    ids = (p[len(prefix):].rstrip("/") for p in prefixes)
    return sorted(run for run in ids if valid_run_id(run))


def load_run(s3, bucket: str, run: str, prefix: str = DEFAULT_RECORDS_PREFIX) -> RunHistory:
    if not valid_run_id(run):
        raise ValueError(f"run id {run!r} is not valid: 1-63 lowercase letters, digits and '-', "
                         "starting with a letter or digit")
    check_prefix(prefix)
    history = RunHistory(run=run)
    notices = history.notices
    history.spec = _get_json_object(s3, bucket, spec_key(run, prefix), notices)
    history.state = _get_json_object(s3, bucket, state_key(run, prefix), notices)
    # The page's role may GetObject under checkpoints/ but not list it, so S3 answers a missing latest.json
    # with 403 rather than 404: there, "denied" means "no checkpoint yet".
    history.latest_checkpoint = _get_json_object(s3, bucket, latest_checkpoint_key(run), notices,
                                                 denied_means_missing=True)

    base = records_prefix(run, prefix)
    keys, _ = _list(s3, bucket, base)
    files: dict[str, dict[str, str]] = {}
    for key in keys:
        segment, _, name = key[len(base):].partition("/")
        if name in ("events.jsonl", "metrics.jsonl"):
            files.setdefault(segment, {})[name] = key
    history.segments = sorted(files)
    for segment in history.segments:
        for name, target in (("events.jsonl", history.events), ("metrics.jsonl", history.metrics)):
            key = files[segment].get(name)
            if key is None:
                continue
            body = _get_bytes(s3, bucket, key, notices)
            if body is not None:
                target.extend(parse_jsonl(body, key, segment, notices))
    history.events.sort(key=lambda r: r["time"])
    history.metrics.sort(key=lambda r: r["time"])

    if history.exists and history.spec is None:
        notices.append(f"{spec_key(run, prefix)} is missing or unreadable: the recipe and data pipeline are unknown")
    if history.exists and not history.segments:
        notices.append("no run records yet: the run has not started on an instance")
    return history


def load_runs(s3, bucket: str, prefix: str = DEFAULT_RECORDS_PREFIX, *, workers: int = 8) -> list[RunHistory]:
    """Every run's history, read in parallel (boto3 clients are thread-safe)."""
    ids = list_run_ids(s3, bucket, prefix)
    if not ids:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(ids))) as pool:
        return list(pool.map(lambda run: load_run(s3, bucket, run, prefix), ids))


def checkpoint_download(s3, bucket: str, history: RunHistory, *, expires_in: int = 900,
                        now: float | None = None) -> dict | None:
    """A presigned GET for the checkpoint that checkpoints/<run>/latest.json names, or None (with a notice).

    latest.json is only written after a verified upload, but its key is still checked to lie under the
    run's own checkpoint prefix, and the object to exist, so the page never links elsewhere or to nothing.
    """
    import time

    from botocore.exceptions import ClientError

    latest = history.latest_checkpoint
    if not latest:
        return None
    key = latest.get("key")
    own = f"{CHECKPOINTS_PREFIX}{history.run}/"
    if not isinstance(key, str) or not key.startswith(own) or ".." in key or "/" in key[len(own):]:
        history.notices.append(f"{latest_checkpoint_key(history.run)}: its key {key!r} is not a checkpoint of this "
                               f"run (expected {own}<file>), so no download link is offered")
        return None
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in _MISSING_CODES | _DENIED_CODES:
            history.notices.append(f"{latest_checkpoint_key(history.run)} names {key}, which cannot be read "
                                   f"({_error_code(exc)}), so no download link is offered")
            return None
        raise
    now = time.time() if now is None else now
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_in))
    return {"url": url, "key": key, "expires": now + expires_in, "expires_in": int(expires_in),
            "size": head.get("ContentLength"), "global_step": latest.get("global_step"),
            "epoch": latest.get("epoch"), "sha256": latest.get("sha256"), "time": latest.get("time")}
