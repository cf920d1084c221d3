"""The run lease on the moto S3 server: conditional writes, waiting, release, expiry, renewal."""
from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from job import layout
from job.lease import Lease, LeaseLost, LeaseTimeout
from job.s3 import client


def test_moto_enforces_the_conditional_headers(bucket):
    s3 = client("s3")
    key = layout.lease_key("cond")
    first = s3.put_object(Bucket=bucket, Key=key, Body=b"{}", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}", IfNoneMatch="*")
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    second = s3.put_object(Bucket=bucket, Key=key, Body=b"{\"a\": 1}", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}", IfMatch=first["ETag"])
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    assert second["ETag"] != first["ETag"]


def test_two_concurrent_holders_never_overlap(bucket):
    holding, overlaps, order = [], [], []
    lock = threading.Lock()

    def instance(name: str):
        lease = Lease(client("s3"), bucket, "busy", holder=name, ttl_s=10, poll_s=0.05)
        for _ in range(3):
            lease.acquire(wait=True, timeout=30)
            with lock:
                holding.append(name)
                if len(holding) > 1:
                    overlaps.append(list(holding))
                order.append(name)
            time.sleep(0.15)
            with lock:
                holding.remove(name)
            lease.release()
            time.sleep(0.02)

    threads = [threading.Thread(target=instance, args=(f"i-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == []
    assert sorted(order) == sorted([f"i-{n}" for n in range(3)] * 3)


def test_second_instance_waits_and_takes_over_after_release(bucket):
    old = Lease(client("s3"), bucket, "handoff", holder="i-old", ttl_s=30)
    assert old.acquire(wait=False)
    new = Lease(client("s3"), bucket, "handoff", holder="i-new", ttl_s=30, poll_s=0.1)
    assert not new.acquire(wait=False)
    got = []
    waiter = threading.Thread(target=lambda: got.append((new.acquire(wait=True, timeout=20), time.monotonic())))
    waiter.start()
    time.sleep(1.0)
    assert got == []  # still waiting while the old holder checkpoints
    released = time.monotonic()
    old.release()
    waiter.join(20)
    assert got and got[0][0] is True
    assert got[0][1] - released < 1.0  # no need to wait for the 30 s expiry
    current, _ = new.read()
    assert current["holder"] == "i-new"


def test_expired_lease_is_taken_over_and_old_holder_learns_it(bucket):
    old = Lease(client("s3"), bucket, "expiry", holder="i-old", ttl_s=1.5)
    assert old.acquire(wait=False)
    new = Lease(client("s3"), bucket, "expiry", holder="i-new", ttl_s=30, poll_s=0.1)
    started = time.monotonic()
    assert new.acquire(wait=True, timeout=10)
    assert 1.0 < time.monotonic() - started < 5
    with pytest.raises(LeaseLost, match="i-new"):
        old.renew()
    old.release()  # nothing to release any more, and it must not clobber the new holder
    assert new.read()[0]["holder"] == "i-new"


def test_renewing_holder_keeps_the_lease_past_its_ttl(bucket):
    holder = Lease(client("s3"), bucket, "renewed", holder="i-a", ttl_s=1.0)
    assert holder.acquire(wait=False)
    lost = []
    holder.start_renewing(on_lost=lost.append)
    other = Lease(client("s3"), bucket, "renewed", holder="i-b", ttl_s=1.0, poll_s=0.1)
    with pytest.raises(LeaseTimeout, match="i-a"):
        other.acquire(wait=True, timeout=2.5)
    assert lost == [] and holder.held
    holder.release()
    assert other.acquire(wait=False)


def test_renewal_thread_reports_a_lost_lease(bucket):
    holder = Lease(client("s3"), bucket, "stolen", holder="i-a", ttl_s=0.9)
    assert holder.acquire(wait=False)
    lost = threading.Event()
    holder.start_renewing(on_lost=lambda reason: lost.set())
    # someone overwrites the lease object (an operator, a buggy instance): our next renewal must notice
    client("s3").put_object(Bucket=bucket, Key=layout.lease_key("stolen"), Body=b'{"holder": "i-x", "expires": 0}')
    assert lost.wait(5)
    assert not holder.held
    holder.release()
