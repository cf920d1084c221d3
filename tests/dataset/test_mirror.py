"""Mirror a prepared dataset to S3 and restore it, against the real moto server."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job import layout
from job.integrity import sha256_file
from job.mirror import MirrorError, mirror, restore

NAME = "tiny-set"
PREFIX = layout.dataset_prefix(NAME)
MiB = 1024 * 1024


def make_prepared(root: Path, big_mib: int = 17) -> dict[str, bytes]:
    """A prepared-dataset-shaped tree; one file above the 16 MiB multipart threshold."""
    files = {
        "index.json": b'{"train": ["train/shard-00000.tar", "train/shard-00001.tar"]}',
        "classes.json": b'["a", "b"]',
        "train/shard-00000.tar": os.urandom(big_mib * MiB + 12345),
        "train/shard-00001.tar": os.urandom(3 * MiB + 7),
        "validation/shard-00000.tar": os.urandom(1 * MiB + 3),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def assert_tree(root: Path, files: dict[str, bytes]) -> None:
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert found == sorted(files)
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data, rel
    assert not list(root.rglob(".*.restore*"))


def test_mirror_then_restore_is_bit_identical_and_idempotent(bucket, tmp_path):
    from job.s3 import client, get_json

    s3 = client("s3")
    files = make_prepared(tmp_path / "prepared")
    (tmp_path / "prepared" / "train" / "shard-00002.tar.tmp").write_bytes(b"a writer's half-written file")
    up = mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    assert up["files_transferred"] == 5 and up["files_skipped"] == 0
    assert up["bytes"] == sum(len(d) for d in files.values())
    manifest = get_json(s3, bucket, layout.dataset_manifest_key(NAME))
    assert manifest == {"files": {rel: {"size": len(d), "sha256": sha256_file(tmp_path / "prepared" / rel)}
                                  for rel, d in files.items()}}
    head = s3.head_object(Bucket=bucket, Key=PREFIX + "train/shard-00000.tar")
    assert head["Metadata"]["sha256"] == manifest["files"]["train/shard-00000.tar"]["sha256"]
    assert "-" in head["ETag"]  # went up as a multipart upload
    assert sorted(_keys(s3, bucket)) == sorted([PREFIX + rel for rel in files] + [layout.dataset_manifest_key(NAME)])
    (tmp_path / "prepared" / "train" / "shard-00002.tar.tmp").unlink()  # local state and temporaries stay local

    again = mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    assert again["files_transferred"] == 0 and again["bytes"] == 0 and again["files_skipped"] == 5

    restored = tmp_path / "restored"
    down = restore(bucket, PREFIX, restored, progress=False)
    assert down["files_transferred"] == 5 and down["bytes"] == up["bytes"]
    assert_tree(restored, files)

    second = restore(bucket, PREFIX, restored, progress=False)
    assert second["files_transferred"] == 0 and second["bytes"] == 0 and second["files_skipped"] == 5


def test_locally_corrupted_file_is_fetched_again(bucket, tmp_path):
    files = make_prepared(tmp_path / "prepared", big_mib=1)
    mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    restored = tmp_path / "restored"
    restore(bucket, PREFIX, restored, progress=False)
    with open(restored / "train/shard-00001.tar", "r+b") as fh:
        fh.seek(4096)
        fh.write(b"\0\1\2\3")
    (restored / "validation/shard-00000.tar").unlink()
    summary = restore(bucket, PREFIX, restored, progress=False)
    assert summary["files_transferred"] == 2 and summary["files_skipped"] == 3
    assert_tree(restored, files)


def test_restore_without_manifest_is_refused(bucket, tmp_path):
    with pytest.raises(MirrorError) as info:
        restore(bucket, PREFIX, tmp_path / "restored", progress=False)
    assert f"no prepared dataset mirror at s3://{bucket}/{PREFIX}" in str(info.value)
    assert "run the data step first" in str(info.value)


def test_interrupted_upload_is_not_complete(bucket, aws, tmp_path):
    """Kill a real `job.mirror upload` mid-transfer: no manifest, so restore refuses; a re-run completes it."""
    from job.s3 import client

    s3 = client("s3")
    files = make_prepared(tmp_path / "prepared", big_mib=48)
    env = {**os.environ, **aws.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "job.mirror", "upload", "--bucket", bucket, "--name", NAME,
                             "--dir", str(tmp_path / "prepared"), "--concurrency", "1", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if s3.list_multipart_uploads(Bucket=bucket).get("Uploads") or _keys(s3, bucket):
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -9, "the upload finished before it could be interrupted"
    assert layout.dataset_manifest_key(NAME) not in _keys(s3, bucket)
    with pytest.raises(MirrorError, match="run the data step first"):
        restore(bucket, PREFIX, tmp_path / "restored", progress=False)

    finished = mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    assert finished["files_transferred"] + finished["files_skipped"] == 5 and finished["files_transferred"] >= 1
    restore(bucket, PREFIX, tmp_path / "restored", progress=False)
    assert_tree(tmp_path / "restored", files)


def test_changing_a_mirror_withdraws_its_manifest_first(bucket, tmp_path):
    from job.s3 import client, get_json

    s3 = client("s3")
    files = make_prepared(tmp_path / "prepared", big_mib=1)
    mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    (tmp_path / "prepared" / "classes.json").write_bytes(b'["a", "b", "c"]')
    files["classes.json"] = b'["a", "b", "c"]'
    summary = mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    assert summary["files_transferred"] == 1 and summary["files_skipped"] == 4
    manifest = get_json(s3, bucket, layout.dataset_manifest_key(NAME))
    assert manifest["files"]["classes.json"]["size"] == len(files["classes.json"])
    restore(bucket, PREFIX, tmp_path / "restored", progress=False)
    assert_tree(tmp_path / "restored", files)


def test_damaged_mirror_object_is_retried_then_a_clear_error(bucket, tmp_path, capfd):
    from job.s3 import client

    make_prepared(tmp_path / "prepared", big_mib=1)
    mirror(tmp_path / "prepared", bucket, PREFIX, progress=False)
    client("s3").put_object(Bucket=bucket, Key=PREFIX + "train/shard-00001.tar", Body=b"not the shard")
    restored = tmp_path / "restored"
    with pytest.raises(MirrorError, match="failed their sha256 check 2 times"):
        restore(bucket, PREFIX, restored, progress=False)
    assert capfd.readouterr().err.count("train/shard-00001.tar: sha256 mismatch") == 2
    assert not (restored / "train/shard-00001.tar").exists()  # never a wrong file where the loader looks
    assert not list(restored.rglob(".*.restore*"))
    assert (restored / "train/shard-00000.tar").exists()  # the good files stay, a re-run skips them


def test_bad_inputs_are_refused(bucket, tmp_path, capsys):
    from job.mirror import main
    from job.s3 import client, put_json

    assert main(["restore", "--bucket", bucket, "--name", NAME, "--dir", str(tmp_path / "r"), "--no-progress"]) == 2
    assert f"error: no prepared dataset mirror at s3://{bucket}/{PREFIX}" in capsys.readouterr().err

    with pytest.raises(MirrorError, match="run `python -m job.prepare` first"):
        mirror(tmp_path / "nothing", bucket, PREFIX, progress=False)
    with pytest.raises(MirrorError, match="not a dataset prefix"):
        mirror(tmp_path, bucket, "checkpoints/tiny-set/", progress=False)
    put_json(client("s3"), bucket, layout.dataset_manifest_key(NAME), {"files": {"../evil": {"size": 1, "sha256": "0"}}})
    with pytest.raises(MirrorError, match="not a plain relative path"):
        restore(bucket, PREFIX, tmp_path / "restored", progress=False)


def _keys(s3, bucket: str) -> list[str]:
    from job.s3 import list_keys

    return list_keys(s3, bucket, PREFIX)
