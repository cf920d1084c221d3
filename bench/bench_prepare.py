"""Prepare speed per core vs the usual hand-made way, where the time goes, and the short-side choice.

    python -m bench.bench_prepare [--classes 16] [--per-class 80] [--short-sides 160,192,256]

Same run, same real-photo images (job/testing/photos.py, Hub parquet layout), one process each:
- baseline: the hand-made way: for each parquet row, PIL open, convert("RGB"), save one JPEG per image into
  class folders (PIL's default quality, full size);
- ours: `job.prepare.prepare(workers=1)`: DCT-scaled decode, resize to the short side, encode q90, pack.
Then a section timing of our per-image steps (parquet read, full vs DCT-scaled decode, resize, encode,
write), and a sweep over short sides: prepare images/s, bytes per image, loader images/s at 176 px.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from job.bench_loader import measure
from job.prepare import DEFAULT_QUALITY, DEFAULT_SHORT_SIDE, _decode_scaled_jpeg, prepare
from job.testing.photos import make_hub_dataset


def rows(source: Path):
    for path in sorted((source / "data").glob("train-*.parquet")):
        table = pq.read_table(path)
        yield from zip(table.column("image").to_pylist(), table.column("label").to_pylist())


def handmade(source: Path, out: Path, names: list[str]) -> dict:
    started = time.perf_counter()
    count = 0
    for image, label in rows(source):
        folder = out / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(io.BytesIO(image["bytes"])).convert("RGB").save(folder / Path(image["path"]).name)
        count += 1
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"images": count, "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1),
            "bytes_per_image": round(size / count)}


def sections(source: Path, short_side: int, quality: int, limit: int = 400) -> dict:
    """Per-image milliseconds of each step of job.prepare.resized_jpeg, timed separately."""
    totals = dict.fromkeys(("parquet_read", "decode_full", "decode_scaled", "resize", "encode", "write"), 0.0)
    count = 0
    started = time.perf_counter()
    table = pq.read_table(sorted((source / "data").glob("train-*.parquet"))[0])
    totals["parquet_read"] = time.perf_counter() - started
    images = table.column("image").to_pylist()[:limit]
    sink = io.BytesIO()
    for image in images:
        data = image["bytes"]
        t0 = time.perf_counter()
        Image.open(io.BytesIO(data)).convert("RGB")
        t1 = time.perf_counter()
        im, target = _decode_scaled_jpeg(data, short_side)  # what job.prepare does: DCT scaling by M/8
        t2 = time.perf_counter()
        if im.size != target:
            im = im.resize(target, Image.Resampling.BILINEAR)
        t3 = time.perf_counter()
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        t4 = time.perf_counter()
        sink.write(buf.getvalue())
        t5 = time.perf_counter()
        for key, value in zip(("decode_full", "decode_scaled", "resize", "encode", "write"),
                              (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            totals[key] += value
        count += 1
    per_image = {key: round(1000 * value / (count if key != "parquet_read" else len(table)), 3)
                 for key, value in totals.items()}
    ours = per_image["parquet_read"] + per_image["decode_scaled"] + per_image["resize"] + per_image["encode"] \
        + per_image["write"]
    return {"ms_per_image": per_image,
            "share_of_ours": {k: round(per_image[k] / ours, 3)
                              for k in ("parquet_read", "decode_scaled", "resize", "encode", "write")},
            "scaled_decode_speedup": round(per_image["decode_full"] / per_image["decode_scaled"], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--short-sides", default="160,192,256")
    parser.add_argument("--loader-seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        summary = make_hub_dataset(tmp / "hub", num_classes=args.classes, train_per_class=args.per_class,
                                   val_per_class=2, train_shards=4, quirks=False)
        source = tmp / "hub"
        result = {"images": summary["counts"]["train"], "classes": args.classes}
        handmade(source, tmp / "warmup", summary["classes"])  # page cache + imports warm for both sides
        result["baseline_handmade"] = handmade(source, tmp / "handmade", summary["classes"])
        ours = prepare(source, tmp / "ours", workers=1, splits=["train"], progress=False)
        result["ours"] = {k: ours[k] for k in ("images", "seconds", "images_per_s")} | {
            "bytes_per_image": round(ours["bytes"] / ours["images"]), "short_side": DEFAULT_SHORT_SIDE}
        result["speedup_per_core"] = round(ours["images_per_s"] / result["baseline_handmade"]["images_per_s"], 2)
        result["sections"] = sections(source, DEFAULT_SHORT_SIDE, DEFAULT_QUALITY)
        sweep = {}
        for side in (int(s) for s in args.short_sides.split(",") if s):
            run = prepare(source, tmp / f"side-{side}", workers=1, splits=["train"], short_side=side,
                          progress=False)
            loader = measure(tmp / f"side-{side}", workers=0, seconds=args.loader_seconds, resolution=176)
            sweep[side] = {"prepare_images_per_s": run["images_per_s"],
                           "bytes_per_image": round(run["bytes"] / run["images"]),
                           "imagenet_train_gb": round(run["bytes"] / run["images"] * 1_281_167 / 1e9, 1),
                           "loader_images_per_s_176": loader["images_per_s"]}
        result["short_side_sweep"] = sweep
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
