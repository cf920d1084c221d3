"""S3 restore bytes/s: job.mirror.restore (TransferManager, verified) vs a single-threaded boto3 get_object loop.

    python -m bench.bench_restore [--files 12] [--file-mib 16] [--concurrency 16]

A moto server on loopback stands in for S3. A prepared-dataset-shaped directory (random bytes: shards are
already-compressed JPEG, so random is representative for transfer) is mirrored once with `job.mirror.mirror`
(timed too, vs a put_object loop), then in the same run:
- baseline: one thread, `get_object` per key, body streamed to a file (no checksum);
- ours: `job.mirror.restore(concurrency=N)` into an empty directory: ranged multipart GETs over N threads,
  sha256 of every file before it is renamed into place.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from job import layout
from job.mirror import mirror, restore
from job.testing.moto_server import MotoServer, aws_env

MiB = 1024 * 1024


def make_prepared(root: Path, files: int, file_mib: int) -> int:
    total = 0
    for index in range(files):
        data = os.urandom(file_mib * MiB + index)
        path = root / "train" / f"shard-{index:05d}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
    (root / "index.json").write_text(json.dumps({"train": [f"train/shard-{i:05d}.tar" for i in range(files)]}))
    return total + (root / "index.json").stat().st_size


def baseline_put(s3, bucket: str, prefix: str, root: Path) -> float:
    started = time.perf_counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        with open(path, "rb") as fh:
            s3.put_object(Bucket=bucket, Key=prefix + path.relative_to(root).as_posix(), Body=fh)
    return time.perf_counter() - started


def baseline_get(s3, bucket: str, prefix: str, out: Path) -> float:
    from job.s3 import list_keys

    started = time.perf_counter()
    for key in list_keys(s3, bucket, prefix):
        dest = out / key[len(prefix):]
        dest.parent.mkdir(parents=True, exist_ok=True)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with open(dest, "wb") as fh:
            for chunk in body.iter_chunks(1024 * 1024):
                fh.write(chunk)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--file-mib", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with MotoServer() as server, aws_env(server), tempfile.TemporaryDirectory() as tmp:
        from job.s3 import client

        s3 = client("s3")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        prepared = Path(tmp) / "prepared"
        nbytes = make_prepared(prepared, args.files, args.file_mib)

        put_s = baseline_put(s3, bucket, "baseline/", prepared)
        up = mirror(prepared, bucket, layout.dataset_prefix("bench"), s3=s3, concurrency=args.concurrency,
                    progress=False)
        get_s = baseline_get(s3, bucket, layout.dataset_prefix("bench"), Path(tmp) / "baseline")
        down = restore(bucket, layout.dataset_prefix("bench"), Path(tmp) / "restored", s3=s3,
                       concurrency=args.concurrency, progress=False)
        assert down["bytes"] == nbytes and down["files_transferred"] == args.files + 1, down
        result = {
            "bench": "restore", "files": args.files + 1, "bytes": nbytes, "concurrency": args.concurrency,
            "machine": f"{os.cpu_count()}-core",
            "restore": {"baseline_s": round(get_s, 2), "baseline_bytes_per_s": round(nbytes / get_s),
                        "ours_s": down["seconds"], "ours_bytes_per_s": round(nbytes / down["seconds"]),
                        "speedup": round(get_s / down["seconds"], 2)},
            "mirror": {"baseline_s": round(put_s, 2), "baseline_bytes_per_s": round(nbytes / put_s),
                       "ours_s": up["seconds"], "ours_bytes_per_s": round(nbytes / up["seconds"]),
                       "speedup": round(put_s / up["seconds"], 2)},
        }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
