"""Run records: events and metrics as JSON lines, kept locally and mirrored to S3 per instance segment.

One writer per (run, segment). The S3 objects are whole-file rewrites of the local JSONL, so a flush is
idempotent and a crash loses at most what was written since the last flush.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from job import layout

STATES = ("created", "preparing", "training", "interrupted", "resuming", "finished", "failed")
TERMINAL_STATES = ("finished", "failed")


class RunRecords:
    def __init__(self, run_dir: Path, *, run: str, segment: str, identity: dict | None = None,
                 bucket: str | None = None, s3=None, flush_every_s: float = 30.0):
        self.run = layout.check_run_name(run)
        self.segment = segment
        self.identity = dict(identity or {})
        self.bucket = bucket
        self._s3 = s3
        self.flush_every_s = flush_every_s
        self.dir = Path(run_dir) / "records" / segment
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events_path = self.dir / "events.jsonl"
        self.metrics_path = self.dir / "metrics.jsonl"
        self._lock = threading.Lock()
        self._last_flush = 0.0

    @property
    def s3(self):
        if self._s3 is None and self.bucket:
            from job import s3 as s3mod

            self._s3 = s3mod.client("s3")
        return self._s3

    def _append(self, path: Path, record: dict) -> dict:
        record = {"time": time.time(), **record}
        line = json.dumps(record, sort_keys=True, default=str)
        with self._lock, path.open("a") as fh:
            fh.write(line + "\n")
        return record

    def event(self, type_: str, **fields) -> dict:
        record = self._append(self.events_path, {"type": type_, **self.identity, **fields})
        self.flush(force=True)
        return record

    def state(self, state: str, **fields) -> dict:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
        record = self.event("state", state=state, **fields)
        if self.bucket:
            from job.s3 import put_json

            put_json(self.s3, self.bucket, layout.state_key(self.run),
                     {"state": state, "time": record["time"], "segment": self.segment, **self.identity})
        return record

    def metric(self, type_: str, **fields) -> dict:
        record = self._append(self.metrics_path, {"type": type_, **fields})
        self.flush()
        return record

    def flush(self, force: bool = False) -> None:
        if not self.bucket:
            return
        now = time.time()
        if not force and now - self._last_flush < self.flush_every_s:
            return
        self._last_flush = now
        with self._lock:
            for path, key in ((self.events_path, layout.events_key(self.run, self.segment)),
                              (self.metrics_path, layout.metrics_key(self.run, self.segment))):
                if path.exists():
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(),
                                       ContentType="application/x-ndjson")


def read_state(s3, bucket: str, run: str) -> dict | None:
    from job.s3 import get_json

    return get_json(s3, bucket, layout.state_key(run))
