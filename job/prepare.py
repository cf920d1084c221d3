"""Prepare the Hub's parquet shards once into big JPEG shards the loader reads fast (format: job/shards.py).

    python -m job.prepare --source SRC --out OUT [--workers N] [--short-side S] [--quality Q]

SRC is laid out like the Hub repo (`SRC/data/<split>-NNNNN-of-MMMMM.parquet`, columns image{bytes,path} and
label, class names in the `huggingface` schema metadata). Each image is decoded once, by libjpeg-turbo at the
smallest power-of-two DCT scale that still covers the target, resized so its short side is S (never
enlarged; OpenCV's bilinear for the < 2x ratio left), re-encoded by libjpeg-turbo as a baseline RGB JPEG
(quality 90) and appended to a shard; PIL takes what libjpeg-turbo can't read (PNG, CMYK, damaged files).
The per-image code, and the measurements behind each step: job/resize.py.

Why short side 192 for train by default (measured in bench/BENCHMARKS.md, "prepare" and "short side"):
training runs at 160-192 px (progressive resizing, 176 typical), and RandomResizedCrop takes 8-100 % of the
area, so more stored pixels are mostly thrown away by the crop's downscale while costing decode time every
epoch and disk/S3 bytes once. 192 keeps ImageNet's typical 4:3 photos at ~256x192 (FFCV's ~256 max side).
Validation is stored at short side 256 because evaluation resizes the short side to 256 before the 224
center crop; it is 4 % of the images, so that costs little.

Determinism: the split's rows (source files in name order, rows in file order) are cut into output shards
of a fixed image count computed from the parameters alone, and each shard is written by one process, so the
bytes are the same whatever the worker count. Resumable: a shard is written under temporary names and
its record (`.json`, written last) marks it complete; a re-run skips complete shards and redoes the rest.
Corrupt images are counted, listed in the shard records, index.json and the summary, and skipped.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from job.resize import DECODE_ERRORS, resized_jpeg, restore_threads, single_threaded
from job.shards import (CLASSES_FILE, FORMAT, FORMAT_VERSION, INDEX_DTYPE, INDEX_FILE, SHARD_DIR, sha256_file,
                        shard_stem, write_atomic, write_json_atomic)

DEFAULT_SHORT_SIDE = 192
DEFAULT_VAL_SHORT_SIDE = 256
DEFAULT_QUALITY = 90
DEFAULT_SHARD_MB = 128
DEFAULT_SPLITS = ("train", "validation")
# Measured on the real-photo test set re-encoded at quality 90: ~0.3 byte per stored pixel. Used only to turn
# the shard size target into a fixed image count (a fixed count keeps the output independent of the worker
# count); it is a low estimate, so real ImageNet (more texture, more bytes per pixel) gives shards >= target.
BYTES_PER_PIXEL_ESTIMATE = 0.3
PROGRESS_EVERY = 32  # images between updates of the shared progress counter (the bar redraws every 0.5 s anyway)
SOURCE_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")


class PrepareError(RuntimeError):
    pass


@dataclass(frozen=True)
class Params:
    short_side: int
    quality: int

    def as_dict(self) -> dict:
        return {"short_side": self.short_side, "quality": self.quality, "format": FORMAT, "version": FORMAT_VERSION}


@dataclass(frozen=True)
class SourceFile:
    path: str
    rows: int
    size: int


@dataclass(frozen=True)
class ShardTask:
    split: str
    shard: int
    start: int   # first global row of the split (inclusive)
    end: int     # last global row (exclusive)
    sources: tuple[SourceFile, ...]
    params: Params
    out: str


# ---------------------------------------------------------------- planning

def class_names_from_schema(path: Path) -> list[str] | None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(b"huggingface")
    if raw is None:
        return None
    try:
        return list(json.loads(raw)["info"]["features"]["label"]["names"])
    except (KeyError, TypeError, ValueError):
        return None


def find_sources(source: Path, splits) -> dict[str, list[SourceFile]]:
    import pyarrow.parquet as pq

    data = source / "data"
    if not data.is_dir():
        raise PrepareError(f"{data} does not exist: --source must be the downloaded Hub repo directory "
                           f"(the one holding data/train-00000-of-NNNNN.parquet); run `python -m job.download` first.")
    found: dict[str, dict[int, tuple[int, Path]]] = {}
    for path in sorted(data.iterdir()):
        match = SOURCE_NAME.match(path.name)
        if match:
            found.setdefault(match["split"], {})[int(match["index"])] = (int(match["total"]), path)
    result = {}
    for split in splits:
        files = found.get(split)
        if not files:
            raise PrepareError(f"no {split}-*.parquet files in {data}; splits present: {sorted(found)}. "
                               f"Download them, or pass --splits with the ones you have.")
        total = next(iter(files.values()))[0]
        missing = sorted(set(range(total)) - set(files))
        if missing:
            raise PrepareError(f"{len(missing)} of {total} {split} parquet files are missing from {data} "
                               f"(first: {split}-{missing[0]:05d}-of-{total:05d}.parquet): the download is "
                               f"incomplete; re-run `python -m job.download` (it resumes).")
        result[split] = [SourceFile(str(p), pq.ParquetFile(p).metadata.num_rows, p.stat().st_size)
                         for _, (_, p) in sorted(files.items())]
    return result


def images_per_shard(short_side: int, shard_mb: float) -> int:
    pixels = short_side * short_side * 4 / 3  # ImageNet's typical 4:3 aspect
    return max(1, int(shard_mb * 1e6 / (pixels * BYTES_PER_PIXEL_ESTIMATE)))


def plan(sources: dict[str, list[SourceFile]], out: Path, params_by_split: dict[str, Params],
         per_shard: dict[str, int]) -> list[ShardTask]:
    tasks = []
    for split, files in sources.items():
        rows = sum(f.rows for f in files)
        count = per_shard[split]
        for shard, start in enumerate(range(0, rows, count)):
            tasks.append(ShardTask(split, shard, start, min(rows, start + count), tuple(files),
                                   params_by_split[split], str(out)))
    return tasks


# ---------------------------------------------------------------- one shard (runs in a worker process)

_progress = None  # multiprocessing.Value shared with the parent: images done, for the progress bar


def _init_worker(counter) -> None:
    global _progress
    _progress = counter
    warnings.simplefilter("ignore")  # PIL's per-image warnings (e.g. palette transparency) would flood the log
    Image.MAX_IMAGE_PIXELS = 300_000_000  # ImageNet has a few very large photos; still refuse absurd ones
    single_threaded()  # one image per process at a time: parallelism comes from the worker processes


def _count_done(images: int) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += images


def _rows(task: ShardTask):
    """Yield (global_row, image_bytes, label) for rows [start, end) of the split, reading only the row
    groups that overlap, one row group at a time and only the image bytes and label columns (not the paths,
    and no per-row dict)."""
    import pyarrow.parquet as pq

    first = 0
    for source in task.sources:
        last = first + source.rows
        if last > task.start and first < task.end:
            parquet = pq.ParquetFile(source.path)
            group_first = first
            for group in range(parquet.num_row_groups):
                group_rows = parquet.metadata.row_group(group).num_rows
                lo, hi = max(task.start, group_first), min(task.end, group_first + group_rows)
                if lo < hi:
                    table = parquet.read_row_group(group, columns=["image.bytes", "label"])
                    table = table.slice(lo - group_first, hi - lo)
                    images = table.column("image").combine_chunks().field("bytes").to_pylist()
                    labels = table.column("label").to_pylist()
                    yield from zip(range(lo, hi), images, labels)
                group_first += group_rows
        first = last


def _source_path(task: ShardTask, row: int) -> str | None:
    """The `image.path` of a global row of the split (read only for the rare corrupt image's report)."""
    import pyarrow.parquet as pq

    first = 0
    for source in task.sources:
        if row < first + source.rows:
            # only the path column: the image bytes of a whole source file would be ~0.5 GB to read for one name
            images = pq.ParquetFile(source.path).read(columns=["image.path"]).column("image").combine_chunks()
            return images.field("path")[row - first].as_py()
        first += source.rows
    return None


def record_path(out: Path, split: str, shard: int) -> Path:
    return out / f"{shard_stem(split, shard)}.json"


def complete_record(task: ShardTask) -> dict | None:
    """The shard's record if the shard is complete and made with the same parameters, else None."""
    out = Path(task.out)
    path = record_path(out, task.split, task.shard)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record["params"] != task.params.as_dict() or record["rows"] != [task.start, task.end]:
        raise PrepareError(
            f"{path} was made with {record['params']} rows {record['rows']}, this run asks for "
            f"{task.params.as_dict()} rows {[task.start, task.end]}: prepare into a new --out directory "
            f"(or delete {out} to rebuild it with the new settings).")
    data, index = out / record["data"], out / record["index"]
    if data.exists() and data.stat().st_size == record["bytes"] and index.exists():
        return record
    return None


def write_shard(task: ShardTask) -> dict:
    out = Path(task.out)
    stem = out / shard_stem(task.split, task.shard)
    data_path, index_path = stem.with_suffix(".bin"), stem.with_suffix(".idx.npy")
    data_tmp = data_path.with_name(data_path.name + ".tmp")
    entries = np.zeros(task.end - task.start, INDEX_DTYPE)
    skipped, count, offset, done = [], 0, 0, 0
    with open(data_tmp, "wb") as handle:
        for row, data, label in _rows(task):
            try:
                if not data:  # a null or empty `image.bytes` cell: nothing to decode, so it counts as corrupt
                    raise ValueError("the row has no image bytes")
                jpeg, height, width = resized_jpeg(data, task.params.short_side, task.params.quality)
            except DECODE_ERRORS as error:
                skipped.append({"row": row, "path": _source_path(task, row),
                                "error": f"{type(error).__name__}: {error}"})
            else:
                handle.write(jpeg)
                entries[count] = (offset, len(jpeg), label, height, width, row)
                offset += len(jpeg)
                count += 1
            done += 1
            if done % PROGRESS_EVERY == 0:
                _count_done(PROGRESS_EVERY)
        _count_done(done % PROGRESS_EVERY)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(data_tmp, data_path)
    index_buffer = io.BytesIO()
    np.save(index_buffer, entries[:count])
    write_atomic(index_path, index_buffer.getvalue())
    record = {
        "split": task.split, "shard": task.shard, "rows": [task.start, task.end], "params": task.params.as_dict(),
        "data": data_path.relative_to(out).as_posix(), "index": index_path.relative_to(out).as_posix(),
        "count": count, "bytes": offset, "sha256": sha256_file(data_path),
        "index_sha256": sha256_file(index_path), "skipped": skipped,
    }
    write_json_atomic(record_path(out, task.split, task.shard), record)  # last: marks the shard complete
    return record


def run_task(task: ShardTask) -> tuple[dict, bool]:
    """(record, written): skips a complete shard, writes it otherwise."""
    record = complete_record(task)
    if record is not None:
        _count_done(task.end - task.start)
        return record, False
    return write_shard(task), True


# ---------------------------------------------------------------- the whole run

def _execute(tasks: list[ShardTask], workers: int, total_rows: int, progress: bool) -> list[tuple[dict, bool]]:
    from tqdm import tqdm

    counter = multiprocessing.Value("q", 0)
    caller_threads = single_threaded()  # the in-process path runs on one thread too; the caller's setting comes back
    bar = tqdm(total=total_rows, unit="img", desc="prepare", disable=not progress, smoothing=0.1,
               dynamic_ncols=True)
    try:
        if workers <= 1:
            _init_worker(counter)
            results = []
            for task in tasks:
                results.append(run_task(task))
                bar.update(counter.value - bar.n)
            return results
        with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
            # Biggest shards first would not help: shards have equal row counts except the last per split.
            pending = pool.map_async(run_task, tasks, chunksize=1)
            while not pending.ready():
                pending.wait(0.5)
                bar.update(counter.value - bar.n)
            results = pending.get()
            bar.update(counter.value - bar.n)
            return results
    finally:
        bar.close()
        restore_threads(caller_threads)
        global _progress
        _progress = None


def prepare(source, out, *, workers: int | None = None, short_side: int = DEFAULT_SHORT_SIDE,
            val_short_side: int | None = DEFAULT_VAL_SHORT_SIDE, quality: int = DEFAULT_QUALITY,
            shard_mb: float = DEFAULT_SHARD_MB, shard_images: int | None = None, splits=DEFAULT_SPLITS,
            progress: bool = True) -> dict:
    """Prepare SRC into OUT; returns the summary (also what the CLI prints)."""
    if not 16 <= short_side <= 4096 or not 1 <= quality <= 100:
        raise PrepareError(f"--short-side must be 16..4096 and --quality 1..100 (got {short_side}, {quality})")
    source, out = Path(source), Path(out)
    workers = workers or len(os.sched_getaffinity(0))
    started = time.perf_counter()
    sources = find_sources(source, splits)
    first_file = Path(next(iter(sources.values()))[0].path)
    names = class_names_from_schema(first_file)
    if names is None:
        raise PrepareError(f"{first_file} has no class names in its `huggingface` schema metadata "
                           f"(info.features.label.names); is SRC really a download of ILSVRC/imagenet-1k?")
    params = {split: Params(val_short_side if split != "train" and val_short_side else short_side, quality)
              for split in sources}
    per_shard = {split: shard_images or images_per_shard(p.short_side, shard_mb) for split, p in params.items()}
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    tasks = plan(sources, out, params, per_shard)
    total_rows = sum(f.rows for files in sources.values() for f in files)
    results = _execute(tasks, workers, total_rows, progress)

    index = {"format": FORMAT, "version": FORMAT_VERSION, "short_side": short_side, "quality": quality,
             "num_classes": len(names), "classes": CLASSES_FILE, "splits": {}}
    for split in sources:
        records = sorted((r for r, _ in results if r["split"] == split), key=lambda r: r["shard"])
        skipped = [dict(item, shard=r["shard"]) for r in records for item in r["skipped"]]
        index["splits"][split] = {
            "count": sum(r["count"] for r in records), "skipped_corrupt": len(skipped), "skipped": skipped,
            "short_side": params[split].short_side, "source_rows": sum(f.rows for f in sources[split]),
            "shards": [{k: r[k] for k in ("data", "index", "count", "bytes", "sha256", "index_sha256")}
                       for r in records],
        }
    write_json_atomic(out / CLASSES_FILE, {"names": names})
    write_json_atomic(out / INDEX_FILE, index)  # last: the loader treats its presence as "prepared"
    seconds = time.perf_counter() - started
    processed = sum(r["count"] + len(r["skipped"]) for r, written in results if written)
    return {
        "out": str(out), "images": sum(s["count"] for s in index["splits"].values()),
        "skipped_corrupt": sum(s["skipped_corrupt"] for s in index["splits"].values()),
        "counts": {split: s["count"] for split, s in index["splits"].items()},
        "shards_written": sum(1 for _, written in results if written),
        "shards_skipped": sum(1 for _, written in results if not written),
        "bytes": sum(sh["bytes"] for s in index["splits"].values() for sh in s["shards"]),
        "processed_this_run": processed, "workers": workers, "seconds": round(seconds, 3),
        "images_per_s": round(processed / seconds, 1) if seconds > 0 else 0.0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="downloaded Hub repo dir (holding data/*.parquet)")
    parser.add_argument("--out", required=True, help="prepared dataset dir")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all usable cores)")
    parser.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE, help="train images' short side")
    parser.add_argument("--val-short-side", type=int, default=DEFAULT_VAL_SHORT_SIDE,
                        help="short side of the other splits (0: same as --short-side)")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    parser.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB, help="target shard size")
    parser.add_argument("--shard-images", type=int, default=None, help="images per shard (overrides --shard-mb)")
    parser.add_argument("--splits", default=",".join(DEFAULT_SPLITS))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = prepare(args.source, args.out, workers=args.workers, short_side=args.short_side,
                          val_short_side=args.val_short_side or None, quality=args.quality,
                          shard_mb=args.shard_mb, shard_images=args.shard_images,
                          splits=[s for s in args.splits.split(",") if s], progress=not args.no_progress)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
