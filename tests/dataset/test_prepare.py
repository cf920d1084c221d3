"""job.prepare on the real-photo Hub dataset: counts, quirky images, determinism, resume, bad input."""
from __future__ import annotations

import filecmp
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from job.prepare import PrepareError, prepare
from job.shards import open_split, read_classes, read_index, sha256_file, ShardReader

SHARD_IMAGES = 150  # several shards from 400 train images, as real data has many


@pytest.fixture(scope="module")
def prepared(hub_dataset, tmp_path_factory):
    source, summary = hub_dataset
    out = tmp_path_factory.mktemp("prepared")
    result = prepare(source, out, workers=1, shard_images=SHARD_IMAGES, progress=False)
    return out, result, summary


def source_rows(source: Path, split: str) -> list[tuple[bytes, int]]:
    rows = []
    for path in sorted((source / "data").glob(f"{split}-*.parquet")):
        table = pq.read_table(path)
        rows += [(img["bytes"], label) for img, label in zip(table.column("image").to_pylist(),
                                                             table.column("label").to_pylist())]
    return rows


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_counts_classes_and_corrupt_report(prepared):
    out, result, summary = prepared
    index = read_index(out)
    corrupt = {split: q.get("corrupt", 0) for split, q in summary["quirks"].items()}
    assert corrupt["train"] > 0 and corrupt["validation"] > 0
    for split in ("train", "validation"):
        info = index["splits"][split]
        assert info["count"] == summary["counts"][split] - corrupt[split]
        assert info["skipped_corrupt"] == corrupt[split] == len(info["skipped"])
        assert all("truncated" in item["error"] and item["path"].endswith(".JPEG") for item in info["skipped"])
        assert sum(s["count"] for s in info["shards"]) == info["count"] == len(open_split(out, split))
        for shard in info["shards"]:
            assert (out / shard["data"]).stat().st_size == shard["bytes"]
            assert sha256_file(out / shard["data"]) == shard["sha256"]
    assert len(index["splits"]["train"]["shards"]) == 3
    assert read_classes(out) == summary["classes"] and index["num_classes"] == len(summary["classes"])
    assert result["images"] == index["splits"]["train"]["count"] + index["splits"]["validation"]["count"]
    assert result["skipped_corrupt"] == corrupt["train"] + corrupt["validation"]
    assert result["images_per_s"] > 0 and result["shards_written"] == 4


def test_every_image_is_rgb_jpeg_resized_with_its_label(prepared, hub_dataset):
    out, _, _ = prepared
    source, _ = hub_dataset
    index = read_index(out)
    seen_modes = set()
    for split in ("train", "validation"):
        short_side = index["splits"][split]["short_side"]
        rows = source_rows(source, split)
        data = open_split(out, split)
        reader = ShardReader(data)
        for sample, entry in enumerate(data.entries):
            original_bytes, label = rows[entry["source_row"]]
            assert entry["label"] == label
            with Image.open(io.BytesIO(original_bytes)) as original:
                seen_modes.add(original.format if original.format == "PNG" else original.mode)
                ow, oh = original.size
                grayscale = original.mode == "L"
            with Image.open(io.BytesIO(bytes(reader.jpeg(sample)))) as stored:
                assert stored.format == "JPEG" and stored.mode == "RGB"
                assert stored.size == (entry["width"], entry["height"])
                assert min(stored.size) == min(short_side, min(ow, oh))
                assert abs(stored.size[0] / stored.size[1] - ow / oh) < 0.02
                if grayscale:  # grey in, grey out: the three channels agree (up to JPEG chroma noise)
                    pixels = np.asarray(stored).astype(int)
                    assert np.abs(pixels[..., 0] - pixels[..., 1]).mean() < 2
    assert {"L", "CMYK", "PNG", "RGB"} <= seen_modes  # the quirky inputs really were there and got through


def test_output_is_identical_with_two_workers_via_cli(prepared, hub_dataset, tmp_path):
    out, _, _ = prepared
    source, _ = hub_dataset
    other = tmp_path / "two-workers"
    proc = subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(source), "--out", str(other),
                           "--workers", "2", "--shard-images", str(SHARD_IMAGES), "--no-progress"],
                          capture_output=True, text=True, timeout=120, check=True)
    summary = json.loads(proc.stdout)
    assert summary["workers"] == 2 and summary["images"] > 0 and summary["seconds"] > 0
    assert set(summary) >= {"images", "skipped_corrupt", "seconds", "images_per_s"}
    files = all_files(out)
    assert files == all_files(other)
    _, mismatch, errors = filecmp.cmpfiles(out, other, files, shallow=False)
    assert mismatch == [] and errors == []


def test_interrupted_prepare_redoes_only_missing_shards(prepared, hub_dataset, tmp_path):
    out, _, _ = prepared
    source, _ = hub_dataset
    work = tmp_path / "resume"
    shutil.copytree(out, work)
    (work / "index.json").unlink()
    # shard 1: killed mid-write (temp data file, no record); shard 2 of validation: never started
    (work / "shards/train-00001.json").unlink()
    os.replace(work / "shards/train-00001.bin", work / "shards/train-00001.bin.tmp")
    with open(work / "shards/train-00001.bin.tmp", "r+b") as handle:
        handle.truncate(1000)
    for suffix in (".bin", ".idx.npy", ".json"):
        (work / f"shards/validation-00000{suffix}").unlink()
    untouched = {name: (work / name).stat().st_mtime_ns for name in ("shards/train-00000.bin", "shards/train-00002.bin")}

    result = prepare(source, work, workers=1, shard_images=SHARD_IMAGES, progress=False)

    assert result["shards_written"] == 2 and result["shards_skipped"] == 2
    assert result["processed_this_run"] == SHARD_IMAGES + 100
    assert {name: (work / name).stat().st_mtime_ns for name in untouched} == untouched
    files = all_files(out)
    assert all_files(work) == files  # the temp file is gone, everything is back
    _, mismatch, errors = filecmp.cmpfiles(out, work, files, shallow=False)
    assert mismatch == [] and errors == []


def test_rerun_with_other_settings_refuses_instead_of_mixing(prepared, hub_dataset, tmp_path):
    out, _, _ = prepared
    source, _ = hub_dataset
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    with pytest.raises(PrepareError, match="new --out"):
        prepare(source, work, workers=1, shard_images=SHARD_IMAGES, short_side=128, progress=False)


def test_bad_source_gives_errors_naming_the_fix(hub_dataset, tmp_path):
    source, _ = hub_dataset
    with pytest.raises(PrepareError, match="job.download"):
        prepare(tmp_path / "nowhere", tmp_path / "out", progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(source, partial)
    (partial / "data/train-00001-of-00002.parquet").unlink()
    with pytest.raises(PrepareError, match="incomplete.*job.download"):
        prepare(partial, tmp_path / "out", progress=False)
    proc = subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(partial), "--out",
                           str(tmp_path / "out"), "--splits", "test"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no test-*.parquet" in proc.stderr


# ---------------------------------------------------------------- the per-image path (job/resize.py)

def _photo_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    import skimage.data

    photo = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize("size, short_side, factor", [
    ((400, 300), 192, 1),    # < 2x the target: full-size decode (the slow 5/8-7/8 IDCTs are avoided)
    ((500, 384), 192, 2),    # exactly 2x: 1/2 still covers 192
    ((500, 383), 192, 1),    # target 251x192: 1/2 gives 250x192, one column short, so full size
    ((1600, 1200), 192, 4),  # 1/8 gives 150 < 192
    ((3200, 2400), 192, 8),
    ((150, 100), 192, 1),    # smaller than the target: never enlarged
])
def test_dct_reduction_is_the_largest_power_of_two_that_covers_the_target(size, short_side, factor):
    from job.resize import dct_reduction, target_size

    width, height = size
    target = target_size(width, height, short_side)
    reduced = dct_reduction(width, height, target)
    assert reduced == factor
    assert -(-width // reduced) >= target[0] and -(-height // reduced) >= target[1]
    if reduced < 8:
        assert -(-width // (2 * reduced)) < target[0] or -(-height // (2 * reduced)) < target[1]


@pytest.mark.parametrize("size", [(400, 300), (500, 384), (1600, 1200), (333, 500)])
def test_resized_jpeg_matches_a_lanczos_reference_at_the_exact_size(size):
    """Whatever the DCT scale, the stored image has the exact target size and stays close to PIL's full
    decode + Lanczos resize: within 30 % of the error that re-encoding that reference alone at the same
    quality costs (the floor any stored JPEG has), so the fast decode + bilinear adds little on top."""
    from job.resize import resized_jpeg, target_size

    data = _photo_jpeg(*size)
    jpeg, height, width = resized_jpeg(data, 192, 90)
    target = target_size(*size, 192)
    with Image.open(io.BytesIO(data)) as original:
        reference = original.convert("RGB").resize(target, Image.Resampling.LANCZOS)
    floor_buffer = io.BytesIO()
    reference.save(floor_buffer, "JPEG", quality=90)
    reference = np.asarray(reference, dtype=np.int16)
    floor = np.abs(np.asarray(Image.open(floor_buffer), dtype=np.int16) - reference).mean()
    with Image.open(io.BytesIO(jpeg)) as stored:
        assert stored.format == "JPEG" and stored.mode == "RGB" and stored.size == target == (width, height)
        error = np.abs(np.asarray(stored, dtype=np.int16) - reference).mean()
    assert error < 1.3 * floor, f"mean abs error {error:.2f} vs a Lanczos reference; re-encode alone: {floor:.2f}"


def test_corrupt_jpeg_raises_a_decode_error_naming_the_damage():
    from job.resize import DECODE_ERRORS, resized_jpeg

    data = _photo_jpeg(400, 300)
    with pytest.raises(DECODE_ERRORS, match="truncated"):
        resized_jpeg(data[: len(data) // 3], 192, 90)
    with pytest.raises(DECODE_ERRORS):
        resized_jpeg(b"not an image at all", 192, 90)


def test_in_process_prepare_gives_the_caller_its_thread_setting_back(hub_dataset, tmp_path):
    import cv2

    source, _ = hub_dataset
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        prepare(source, tmp_path / "out", workers=1, splits=["validation"], progress=False)
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_rows_without_image_bytes_are_reported_as_corrupt_not_a_crash(hub_dataset, tmp_path):
    import pyarrow as pa

    source, summary = hub_dataset
    name = "data/validation-00000-of-00001.parquet"
    table = pq.read_table(source / name)
    images = table.column("image").to_pylist()
    images[0] = {"bytes": None, "path": images[0]["path"]}   # a null cell
    images[1] = {"bytes": b"", "path": images[1]["path"]}    # an empty one
    table = table.set_column(0, table.schema.field("image"), pa.array(images, type=table.schema.field("image").type))
    (tmp_path / "src" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "src" / name)
    out = tmp_path / "out"
    result = prepare(tmp_path / "src", out, workers=1, splits=["validation"], progress=False)
    skipped = read_index(out)["splits"]["validation"]["skipped"]
    no_bytes = [item for item in skipped if "no image bytes" in item["error"]]
    assert sorted(item["row"] for item in no_bytes) == [0, 1]
    assert [item["path"] for item in sorted(no_bytes, key=lambda i: i["row"])] == [images[0]["path"], images[1]["path"]]
    others = [item for item in skipped if item["row"] not in (0, 1)]
    assert others and all("truncated" in item["error"] for item in others)  # the set's own corrupt files
    assert result["skipped_corrupt"] == len(skipped) == 2 + len(others)
    assert result["counts"]["validation"] == summary["counts"]["validation"] - len(skipped)
