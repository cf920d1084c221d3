"""Hub download bytes/s: job.download (parallel, verified) vs one sequential HTTP stream, same files, same endpoint.

    python -m bench.bench_download [--classes 16] [--per-class 250] [--shards 8] [--workers 8] [--throttle-mbps 16]

The local Hub (job.testing.hub_server) runs in its own process serving a real-photo dataset in the Hub layout
(~150 MB by default, cached under /tmp between runs). In the same run:
- baseline: urllib, one GET after another, each file streamed to disk (no checksum);
- ours: `job.download.download(workers=N)`: metadata listing, HEAD per file, N parallel streams, sha256 of every
  file before it is moved into place.
Twice: unthrottled (loopback: both sides compete for this machine's CPUs) and with every connection capped at
--throttle-mbps, which is how the Hub's CDN behaves (per-connection throughput well below the NIC's) and where
parallel streams pay off. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from job.download import download
from job.integrity import sha256_file
from job.testing.photos import make_hub_dataset

REPO = "ILSVRC/imagenet-1k"


def dataset(classes: int, per_class: int, shards: int) -> Path:
    root = Path(tempfile.gettempdir()) / f"spot-bench-hub-{classes}x{per_class}x{shards}"
    if not (root / "README.md").exists():
        shutil.rmtree(root, ignore_errors=True)
        make_hub_dataset(root, num_classes=classes, train_per_class=per_class, val_per_class=max(per_class // 10, 1),
                         train_shards=shards, quirks=False)
    return root


class ServerProcess:
    def __init__(self, root: Path, throttle_bps: float | None):
        cmd = [sys.executable, "-m", "job.testing.hub_server", "--root", str(root), "--repo", REPO]
        if throttle_bps:
            cmd += ["--throttle-bps", str(throttle_bps)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.url = json.loads(self.proc.stdout.readline())["url"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def sequential(url: str, files: list[str], out: Path) -> float:
    started = time.perf_counter()
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(f"{url}/datasets/{REPO}/resolve/main/{rel}", timeout=60) as response, \
                open(dest, "wb") as fh:
            shutil.copyfileobj(response, fh, 1024 * 1024)
    return time.perf_counter() - started


def compare(root: Path, files: list[str], nbytes: int, workers: int, throttle_bps: float | None) -> dict:
    # process_time counts this process's threads only: the client's CPU cost, not the server's.
    with ServerProcess(root, throttle_bps) as server, tempfile.TemporaryDirectory() as tmp:
        cpu = time.process_time()
        base_s = sequential(server.url, files, Path(tmp) / "baseline")
        base_cpu, cpu = time.process_time() - cpu, time.process_time()
        ours = download(REPO, Path(tmp) / "ours", workers=workers, endpoint=server.url, progress=False)
        ours_cpu = time.process_time() - cpu
    assert ours["bytes_downloaded"] == nbytes, ours
    return {
        "throttle_bytes_per_s_per_connection": throttle_bps,
        "baseline_s": round(base_s, 2), "baseline_bytes_per_s": round(nbytes / base_s),
        "ours_s": ours["seconds"], "ours_bytes_per_s": round(nbytes / ours["seconds"]),
        "speedup": round(base_s / ours["seconds"], 2),
        "baseline_client_bytes_per_cpu_s": round(nbytes / base_cpu), "ours_client_bytes_per_cpu_s": round(nbytes / ours_cpu),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--throttle-mbps", type=float, default=16.0, help="per-connection cap, MB/s (0: skip)")
    args = parser.parse_args(argv)
    os.environ.pop("HF_TOKEN", None)
    root = dataset(args.classes, args.per_class, args.shards)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "data").glob("*.parquet"))
    nbytes = sum((root / f).stat().st_size for f in files)
    started = time.perf_counter()
    for rel in files:
        sha256_file(root / rel)
    result = {"bench": "download", "files": len(files), "bytes": nbytes, "workers": args.workers,
              "machine": f"{os.cpu_count()}-core", "sha256_all_files_s": round(time.perf_counter() - started, 2),
              "unthrottled": compare(root, files, nbytes, args.workers, None)}
    if args.throttle_mbps:
        result["throttled"] = compare(root, files, nbytes, args.workers, args.throttle_mbps * 1e6)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
