"""One trainer per run across instances: a lease object in S3 changed only by conditional writes.

runs/<run>/lease.json = {"holder", "expires", "renewed", "acquired"} (epoch seconds, the writer's clock:
EC2 instances keep it within milliseconds via the Amazon Time Sync Service).

* create: PutObject If-None-Match: * (fails if anyone created it first)
* renew / release / take over: PutObject If-Match: <the ETag we last saw> (fails if anyone wrote since)

A released lease is rewritten with holder None rather than deleted, so every transition is a conditional
PUT (supported by S3 since Nov 2024; conditional DELETE is newer and not needed). A live lease held by
someone else is waited on; an expired one is taken over. Losing a conditional race is not an error: the
loser re-reads and waits.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from job import layout

log = logging.getLogger(__name__)

# 412 PreconditionFailed: the ETag/existence condition failed. 409 ConditionalRequestConflict: S3 saw a
# concurrent conditional write to the same key. Both mean "someone else wrote it": re-read.
_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class LeaseLost(RuntimeError):
    """Our lease was taken over or changed by someone else."""


class LeaseTimeout(TimeoutError):
    pass


def _error_code(exc) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


class Lease:
    def __init__(self, s3, bucket: str, run: str, holder: str, *, ttl_s: float = 90.0,
                 renew_every_s: float | None = None, poll_s: float = 5.0):
        if ttl_s <= 0:
            raise ValueError("lease ttl_s must be positive")
        self.s3, self.bucket, self.key = s3, bucket, layout.lease_key(run)
        self.run, self.holder = run, holder
        self.ttl_s = ttl_s
        self.renew_every_s = renew_every_s or ttl_s / 3   # two renewals may fail before it expires
        self.poll_s = poll_s
        self.etag: str | None = None
        self.expires = 0.0
        self.acquired: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- S3 primitives -------------------------------------------------------------------------------
    def read(self) -> tuple[dict | None, str | None]:
        """(lease, etag), or (None, None) when there is no lease object yet."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except self.s3.exceptions.NoSuchKey:
            return None, None
        return json.loads(obj["Body"].read()), obj["ETag"]

    def _write(self, body: dict, *, if_match: str | None = None) -> bool:
        """A conditional PUT; False when another writer got there first."""
        from botocore.exceptions import ClientError

        extra = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            resp = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode(),
                                      ContentType="application/json", **extra)
        except ClientError as exc:
            if _error_code(exc) in _LOST_RACE:
                return False
            raise
        self.etag = resp["ETag"]
        return True

    def _body(self, now: float, acquired: float | None = None) -> dict:
        return {"holder": self.holder, "expires": now + self.ttl_s, "renewed": now,
                "acquired": acquired or now}

    # --- acquire / renew / release ---------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """One attempt: create the lease, take it over if free or expired, or refresh our own."""
        current, etag = self.read()
        now = time.time()
        if current is None:
            ok = self._write(self._body(now))
            how = "created"
        elif current.get("holder") in (None, self.holder) or current.get("expires", 0) <= now:
            ok = self._write(self._body(now), if_match=etag)
            how = ("re-acquired our own" if current.get("holder") == self.holder
                   else "took over the released" if current.get("holder") is None
                   else f"took over the expired (holder {current['holder']}, expired "
                        f"{now - current.get('expires', 0):.0f}s ago)")
        else:
            return False
        if ok:
            self.expires, self.acquired = now + self.ttl_s, now
            log.info("lease %s: %s lease as %s, valid %.0fs", self.key, how, self.holder, self.ttl_s)
        else:
            log.info("lease %s: another instance wrote the lease first; re-reading", self.key)
        return ok

    def acquire(self, *, wait: bool = True, timeout: float | None = None) -> bool:
        """Hold the lease; with wait, block while another holder's lease is live (up to timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_said = None
        while True:
            if self.try_acquire():
                return True
            if not wait:
                return False
            current, _ = self.read()
            if current and current.get("holder") not in (None, self.holder):
                said = (current["holder"], round(current.get("expires", 0)))
                if said != last_said:
                    log.info("lease %s held by %s until %s (%.0fs); waiting for it to be released or expire",
                             self.key, current["holder"], time.strftime("%H:%M:%S", time.localtime(current["expires"])),
                             current["expires"] - time.time())
                    last_said = said
                pause = min(self.poll_s, max(0.05, current["expires"] - time.time() + 0.05))
            else:
                pause = 0.05  # lost a race on a free lease: retry at once
            if deadline is not None and time.monotonic() + pause > deadline:
                raise LeaseTimeout(f"lease {self.key} still held by {current and current.get('holder')} "
                                   f"after {timeout:.0f}s")
            time.sleep(pause)

    def renew(self) -> None:
        """Extend our lease; LeaseLost when anyone else wrote the object since our last write."""
        if self.etag is None:
            raise LeaseLost(f"lease {self.key} is not held by {self.holder}")
        now = time.time()
        if not self._write(self._body(now, self.acquired), if_match=self.etag):
            self.etag = None
            current, _ = self.read()
            raise LeaseLost(f"lease {self.key} changed hands (now held by {current and current.get('holder')})")
        self.expires = now + self.ttl_s

    def release(self) -> None:
        """Give the lease up at once (the next holder need not wait for expiry). Safe to call twice."""
        self.stop_renewing()
        if self.etag is None:
            return
        now = time.time()
        if self._write({"holder": None, "expires": 0, "renewed": now, "released_by": self.holder},
                       if_match=self.etag):
            log.info("lease %s released by %s", self.key, self.holder)
        else:
            log.warning("lease %s had already changed hands; nothing to release", self.key)
        self.etag = None

    @property
    def held(self) -> bool:
        return self.etag is not None and time.time() < self.expires

    # --- background renewal ------------------------------------------------------------------------------
    def start_renewing(self, on_lost=None) -> None:
        """Renew every renew_every_s in a daemon thread; call on_lost(reason) once if the lease is lost."""
        from botocore.exceptions import BotoCoreError, ClientError

        def loop():
            while not self._stop.wait(self.renew_every_s):
                try:
                    self.renew()
                except LeaseLost as exc:
                    log.error("%s", exc)
                    if on_lost:
                        on_lost(str(exc))
                    return
                except (BotoCoreError, ClientError) as exc:  # S3 unreachable: retry until the lease would lapse
                    log.warning("lease %s renewal failed: %s", self.key, exc)
                    if time.time() >= self.expires:
                        self.etag = None
                        if on_lost:
                            on_lost(f"could not renew before expiry: {exc}")
                        return

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=f"lease-{self.run}", daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
