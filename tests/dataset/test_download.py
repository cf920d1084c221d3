"""job.download against the local Hub server, through the real huggingface_hub client code."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job.download import PARTIAL_DIR, DownloadError, download, main
from job.integrity import sha256_file
from job.testing.hub_server import HubServer

REPO = "ILSVRC/imagenet-1k"
TRAIN = "data/train-00000-of-00001.parquet"
VAL = "data/validation-00000-of-00001.parquet"
CHUNK = 10 * 1024 * 1024  # huggingface_hub's http_get writes in 10 MiB chunks: the granularity of resume


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Real-photo dataset with one train shard (~13 MB, above the 10 MiB resume granularity) and one validation."""
    from job.testing.photos import make_hub_dataset

    root = tmp_path_factory.mktemp("hub-source")
    make_hub_dataset(root, num_classes=10, train_per_class=40, val_per_class=10, train_shards=1)
    assert (root / TRAIN).stat().st_size > CHUNK + 1024 * 1024
    return root


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


def resolve_gets(hub: HubServer, path: str | None = None):
    return [r for r in hub.requests(method="GET", kind="resolve", path=path) if r.status in (200, 206)]


def assert_same_files(source: Path, out: Path, files=(TRAIN, VAL)):
    for rel in files:
        assert sha256_file(out / rel) == sha256_file(source / rel), rel
    assert sorted(p.relative_to(out).as_posix() for p in (out / "data").iterdir()) == sorted(files)
    assert not any((out / PARTIAL_DIR).rglob("*.part"))


def test_full_download_matches_source(source, tmp_path):
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        summary = download(REPO, out, "main", "train,validation", workers=2, endpoint=hub.url, progress=False)
        gets = resolve_gets(hub)
    assert_same_files(source, out)
    assert not (out / "README.md").exists()  # only the split files are fetched
    assert summary["files"] == summary["downloaded"] == 2 and summary["skipped"] == 0
    assert summary["bytes_downloaded"] == summary["bytes_total"] == sum((source / f).stat().st_size for f in (TRAIN, VAL))
    assert sorted(r.path for r in gets) == [TRAIN, VAL] and all(r.range is None for r in gets)


def test_one_split_and_unknown_split(source, tmp_path, capsys, monkeypatch):
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        download(REPO, out, splits=["validation"], workers=1, endpoint=hub.url, progress=False)
        assert [r.path for r in resolve_gets(hub)] == [VAL]
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert main(["--repo", REPO, "--splits", "train,test", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "split(s) test" in err and "splits found: train, validation" in err and "--splits" in err


def test_rerun_downloads_nothing(source, tmp_path):
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        hub.clear_log()
        summary = download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        assert hub.requests(kind="resolve") == []  # not even a HEAD: the metadata listing was enough
    assert summary["skipped"] == 2 and summary["downloaded"] == 0 and summary["bytes_downloaded"] == 0
    assert_same_files(source, out)


def test_locally_corrupted_file_is_fetched_again(source, tmp_path):
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        with open(out / VAL, "r+b") as fh:  # same size, one flipped byte (bit rot, a bad copy)
            fh.seek(1000)
            byte = fh.read(1)
            fh.seek(1000)
            fh.write(bytes([byte[0] ^ 0xFF]))
        hub.clear_log()
        summary = download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        assert [r.path for r in resolve_gets(hub)] == [VAL]
    assert summary["downloaded"] == 1 and summary["skipped"] == 1
    assert_same_files(source, out)


def test_resume_after_connection_cut_mid_file(source, tmp_path):
    out = tmp_path / "hub"
    size = (source / TRAIN).stat().st_size
    cut = CHUNK + 512 * 1024
    with HubServer(source, REPO) as hub:
        hub.cut_connections(after_bytes=cut, times=1, path=TRAIN)
        download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        gets = hub.requests(method="GET", kind="resolve", path=TRAIN)
        sent = hub.bytes_sent(TRAIN)
    assert [(g.status, g.range, g.bytes_sent) for g in gets] == [
        (200, None, cut), (206, f"bytes={CHUNK}-", size - CHUNK)]
    assert sent < 2 * size
    assert_same_files(source, out)


def test_resume_partial_file_left_by_a_killed_run(source, tmp_path):
    out = tmp_path / "hub"
    part = out / PARTIAL_DIR / (TRAIN + ".part")
    size = (source / TRAIN).stat().st_size
    with HubServer(source, REPO) as hub:
        hub.stall_connections(after_bytes=CHUNK + 256 * 1024, times=1, path=TRAIN)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen([sys.executable, "-m", "job.download", "--repo", REPO, "--out", str(out),
                                 "--workers", "2", "--no-progress"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (part.exists() and part.stat().st_size >= CHUNK) and time.monotonic() < deadline:
                assert proc.poll() is None, "the download finished although the server was holding the file"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            hub.release()
            hub.wait_idle()
        assert part.stat().st_size == CHUNK and not (out / TRAIN).exists()
        hub.clear_log()
        summary = download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        gets = resolve_gets(hub, TRAIN)
    assert [(g.status, g.range, g.bytes_sent) for g in gets] == [(206, f"bytes={CHUNK}-", size - CHUNK)]
    assert summary["bytes_resumed"] == CHUNK
    assert_same_files(source, out)


def test_corrupted_download_is_detected_and_fetched_again(source, tmp_path, capfd):
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        hub.corrupt_next(VAL)
        summary = download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        gets = resolve_gets(hub, VAL)
    assert [(g.status, g.bytes_sent) for g in gets] == [(200, (source / VAL).stat().st_size)] * 2
    assert "checksum mismatch" in capfd.readouterr().err
    assert summary["bytes_downloaded"] == summary["bytes_total"] + (source / VAL).stat().st_size
    assert_same_files(source, out)


def test_bad_bytes_every_time_is_a_clear_error(source, tmp_path):
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        hub.corrupt_next(VAL, times=5)
        with pytest.raises(DownloadError, match="failed its checksum 2 times"):
            download(REPO, out, splits="validation", workers=1, endpoint=hub.url, progress=False)
    assert not (out / VAL).exists() and not any((out / PARTIAL_DIR).rglob("*.part"))


def test_missing_token_names_the_fix(source, tmp_path):
    out = tmp_path / "hub"
    with HubServer(source, REPO, token="hf_good") as hub:
        with pytest.raises(DownloadError) as info:
            download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        assert resolve_gets(hub) == []
        statuses = {r.status for r in hub.requests(kind="resolve")}
    message = str(info.value)
    assert statuses == {401}
    assert "export HF_TOKEN=hf_" in message and "Accept the dataset's terms" in message
    assert f"{hub.url}/datasets/{REPO}" in message
    assert not (out / "data").exists()


def test_invalid_token_is_told_apart(source, tmp_path):
    with HubServer(source, REPO, token="hf_good") as hub:
        with pytest.raises(DownloadError) as info:
            download(REPO, tmp_path / "hub", token="hf_typo_secret", endpoint=hub.url, progress=False)
    message = str(info.value)
    assert "rejected (401: invalid or expired)" in message and "HF_TOKEN" in message
    assert "hf_typo_secret" not in message


def test_terms_not_accepted_is_403_with_the_fix(source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    with HubServer(source, REPO, token="hf_good", terms_accepted=False) as hub:
        with pytest.raises(DownloadError) as info:
            download(REPO, tmp_path / "hub", endpoint=hub.url, progress=False)
        assert {r.status for r in hub.requests(kind="resolve")} == {403}
    message = str(info.value)
    assert "has not accepted the terms" in message and f"accept the terms at {hub.url}/datasets/{REPO}" in message
    assert "hf_good" not in message


def test_token_from_ssm_parameter_is_used_and_never_printed(source, tmp_path, aws, capfd, monkeypatch):
    from job.s3 import client

    client("ssm").put_parameter(Name="/spot-resnet/hf-token", Value="hf_from_ssm", Type="SecureString")
    out = tmp_path / "hub"
    with HubServer(source, REPO, token="hf_from_ssm") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert main(["--repo", REPO, "--out", str(out), "--token-parameter", "/spot-resnet/hf-token"]) == 0
        gets = resolve_gets(hub)
    assert len(gets) == 2 and all(g.authorization for g in gets)
    captured = capfd.readouterr()
    assert "hf_from_ssm" not in captured.out + captured.err
    assert '"downloaded": 2' in captured.out and "download" in captured.err  # summary JSON + progress bar
    assert_same_files(source, out)
    with pytest.raises(DownloadError, match="does not exist: store the token"):
        download(REPO, tmp_path / "other", token_parameter="/nope", endpoint=hub.url, progress=False)


def test_insufficient_disk_is_refused_before_downloading(source, tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    out = tmp_path / "hub"
    with HubServer(source, REPO) as hub:
        with pytest.raises(OSError) as info:
            download(REPO, out, workers=2, endpoint=hub.url, progress=False)
        assert hub.requests(kind="resolve") == []
    needed = sum((source / f).stat().st_size for f in (TRAIN, VAL))
    message = str(info.value)
    assert f"({needed} bytes)" in message and "only 976.6 KiB is free" in message and "larger volume" in message
    assert not (out / "data").exists()
