"""CheckpointStore against the real moto server, with real network failures from a TCP proxy."""
from __future__ import annotations

import json

import pytest
import torch

from job import layout, s3
from job.checkpoint import CheckpointStore, UploadFailed, load
from job.s3 import get_json
from job.testing.flaky_proxy import FlakyProxy

pytestmark = pytest.mark.timeout(120)


def _state(step: int, megabytes: int = 12) -> dict:
    generator = torch.Generator().manual_seed(step)
    return {"global_step": step, "epoch": 0, "model": {"w": torch.randn(megabytes << 18, generator=generator)}}


def _store(tmp_path, bucket, client, **kwargs) -> CheckpointStore:
    # 5 MB parts (S3's minimum): a 12 MB checkpoint is a 3-part multipart upload
    return CheckpointStore(tmp_path / "ckpt", run="store-test", bucket=bucket, s3=client,
                           transfer_config=s3.transfer_config(concurrency=3, chunk_mb=5), retry_wait_s=0.1,
                           **kwargs)


@pytest.fixture
def proxy(aws):
    with FlakyProxy(aws.url) as running:
        yield running


@pytest.fixture
def proxied_client(proxy, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    return s3.client("s3", max_attempts=3, connect_timeout=2, read_timeout=10)


def test_cut_uploads_are_retried_and_latest_only_names_verified_objects(tmp_path, bucket, proxy, proxied_client):
    direct = s3.client("s3")
    latest = layout.latest_checkpoint_key("store-test")
    store = _store(tmp_path, bucket, proxied_client, upload_attempts=2)

    proxy.fail(2)  # the first two part uploads are reset mid-body; botocore retries them
    durable = store.save(_state(1)).result(timeout=60)
    assert len(proxy.dropped) == 2 and all(".pt?" in line for line in proxy.dropped)
    assert get_json(direct, bucket, latest) == durable.pointer()
    head = direct.head_object(Bucket=bucket, Key=durable.key)
    assert head["ContentLength"] == durable.size and head["Metadata"]["sha256"] == durable.sha256

    proxy.fail(10**6)  # S3 unreachable for checkpoint uploads: every attempt fails
    with pytest.raises(UploadFailed, match="local copy is kept"):
        store.save(_state(2)).result(timeout=90)
    kept = store.path_for(2)
    assert kept.exists() and torch.equal(load(kept)["model"]["w"], _state(2)["model"]["w"])
    assert get_json(direct, bucket, latest)["global_step"] == 1          # never a partial object
    with pytest.raises(direct.exceptions.ClientError):
        direct.head_object(Bucket=bucket, Key=layout.checkpoint_key("store-test", 2))
    assert not direct.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted, nothing half-done left
    assert store.path_for(1).exists()                                       # the durable one is untouched
    store.close()

    # The next start finds the newer local checkpoint, uses it, and makes it durable.
    proxy.fail(0)
    restarted = _store(tmp_path, bucket, proxied_client)
    found = restarted.find_latest()
    assert (found.global_step, found.source, found.problems) == (2, "local", [])
    assert restarted.pending(2).result(timeout=60).global_step == 2
    assert get_json(direct, bucket, latest)["global_step"] == 2
    restarted.close()


def test_corrupt_checkpoints_are_named_and_the_previous_one_is_used(tmp_path, bucket):
    client = s3.client("s3")
    store = _store(tmp_path, bucket, client, keep=3)
    for step in (1, 2):
        store.save(_state(step, megabytes=6)).result(timeout=60)
    newest = store.path_for(2)
    newest.write_bytes(newest.read_bytes()[:1000])            # truncated on the local disk

    found = store.find_latest()                                # the S3 copy of step 2 is still good
    assert (found.global_step, found.source) == (2, "s3")
    assert len(found.problems) == 1 and str(newest) in found.problems[0] and "truncated" in found.problems[0]
    assert list(newest.parent.glob(newest.name + ".corrupt-*"))  # kept for inspection, not deleted

    key = layout.checkpoint_key("store-test", 2)
    head = client.head_object(Bucket=bucket, Key=key)
    client.put_object(Bucket=bucket, Key=key, Body=newest.read_bytes()[:5000], Metadata=head["Metadata"])
    newest.write_bytes(b"garbage")
    found = store.find_latest()
    assert (found.global_step, found.source) == (1, "local")
    assert str(newest) in found.problems[0] and f"s3://{bucket}/{key} is corrupt" in found.problems[1]
    assert torch.equal(load(found.path)["model"]["w"], _state(1, megabytes=6)["model"]["w"])
    store.close()


def test_keeps_the_newest_k_locally_and_in_s3(tmp_path, bucket):
    client = s3.client("s3")
    store = _store(tmp_path, bucket, client, keep=2)
    for step in (3, 6, 9, 12):
        store.save(_state(step, megabytes=1)).result(timeout=60)
    remote = sorted(k for k in s3.list_keys(client, bucket, layout.checkpoint_prefix("store-test")) if k.endswith(".pt"))
    assert remote == [layout.checkpoint_key("store-test", 9), layout.checkpoint_key("store-test", 12)]
    assert sorted(p.name for p in store.local_dir.glob("step-*.pt")) == ["step-000000009.pt", "step-000000012.pt"]
    meta = json.loads((store.local_dir / "step-000000012.pt.json").read_text())
    assert get_json(client, bucket, layout.latest_checkpoint_key("store-test"))["sha256"] == meta["sha256"]
    store.close()


def test_without_a_bucket_the_newest_k_are_kept_locally_and_used(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", run="store-test", keep=2)
    for step in (3, 6, 9):
        assert store.save(_state(step, megabytes=1)).result(timeout=60) is None   # nothing to make durable
    assert sorted(p.name for p in store.local_dir.glob("step-*.pt*")) == [
        "step-000000006.pt", "step-000000006.pt.json", "step-000000009.pt", "step-000000009.pt.json"]
    found = store.find_latest()
    assert (found.global_step, found.source) == (9, "local")
    assert torch.equal(load(found.path)["model"]["w"], _state(9, megabytes=1)["model"]["w"])
    store.close()
