"""S3 restore bytes/s: job.mirror.restore (TransferManager, verified) vs a single-threaded boto3 get_object loop.

    python -m bench.bench_restore [--files 12] [--file-mib 16] [--concurrency 16] [--throttle-mbps 16]

A moto server on loopback stands in for S3. A prepared-dataset-shaped directory (random bytes: shards are
already-compressed JPEG, so random is representative for transfer) is mirrored once with `job.mirror.mirror`
(timed too, vs a put_object loop), then in the same run:
- baseline: one thread, `get_object` per key, body streamed to a file (no checksum);
- ours: `job.mirror.restore(concurrency=N)` into an empty directory: ranged multipart GETs over N threads,
  sha256 of every file before it is renamed into place.
Twice: straight to moto (loopback: client, moto and hashing share this machine's CPUs), and through a TCP relay
that caps each connection at --throttle-mbps, because real S3 serves each connection at roughly 85-90 MB/s
(AWS: "one concurrent request for each 85-90 MB/s of desired network throughput") so a 25 Gbps instance needs
many streams. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from job import layout
from job.integrity import sha256_file
from job.mirror import mirror, restore
from job.testing.moto_server import MotoServer, aws_env

MiB = 1024 * 1024


def _client_at(url: str):
    """job.s3's client (same retries and pool size) pointed at another endpoint."""
    from job import s3

    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = url
    s3._session.cache_clear()
    try:
        return s3.client("s3")
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved
        s3._session.cache_clear()


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


class ThrottledRelay:
    """A loopback TCP relay to `port` that caps each connection's server-to-client bytes at `bps`."""

    def __init__(self, port: int, bps: float):
        self.port, self.bps = port, bps
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.bps), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, bps: float | None) -> None:
        sent, began = 0, time.monotonic()
        try:
            while data := src.recv(256 * 1024):
                dst.sendall(data)
                if bps:
                    sent += len(data)
                    ahead = sent / bps - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
                    elif ahead < -0.05:  # idle keep-alive time is not credit for a later burst
                        sent, began = 0, time.monotonic()
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def compare_restore(s3, bucket: str, prefix: str, nbytes: int, files: int, out: Path, concurrency: int) -> dict:
    get_s = baseline_get(s3, bucket, prefix, out / "baseline")
    down = restore(bucket, prefix, out / "restored", s3=s3, concurrency=concurrency, progress=False)
    assert down["bytes"] == nbytes and down["files_transferred"] == files, down
    return {"baseline_s": round(get_s, 2), "baseline_bytes_per_s": round(nbytes / get_s),
            "ours_s": down["seconds"], "ours_bytes_per_s": round(nbytes / down["seconds"]),
            "speedup": round(get_s / down["seconds"], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--file-mib", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--throttle-mbps", type=float, default=16.0, help="per-connection cap, MB/s (0: skip)")
    args = parser.parse_args(argv)
    with MotoServer() as server, aws_env(server), tempfile.TemporaryDirectory() as tmp:
        from job.s3 import client

        s3 = client("s3")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        prepared = Path(tmp) / "prepared"
        nbytes = make_prepared(prepared, args.files, args.file_mib)

        put_s = baseline_put(s3, bucket, "baseline/", prepared)
        prefix = layout.dataset_prefix("bench")
        up = mirror(prepared, bucket, prefix, s3=s3, concurrency=args.concurrency, progress=False)
        started = time.perf_counter()
        for path in prepared.rglob("*.tar"):
            sha256_file(path)
        result = {
            "bench": "restore", "files": args.files + 1, "bytes": nbytes, "concurrency": args.concurrency,
            "machine": f"{os.cpu_count()}-core", "sha256_all_files_s": round(time.perf_counter() - started, 2),
            "mirror": {"baseline_s": round(put_s, 2), "baseline_bytes_per_s": round(nbytes / put_s),
                       "ours_s": up["seconds"], "ours_bytes_per_s": round(nbytes / up["seconds"]),
                       "speedup": round(put_s / up["seconds"], 2)},
            "restore_unthrottled": compare_restore(s3, bucket, prefix, nbytes, args.files + 1, Path(tmp) / "u",
                                                   args.concurrency),
        }
        if args.throttle_mbps:
            relay = ThrottledRelay(server.port, args.throttle_mbps * 1e6)
            try:
                throttled = _client_at(relay.url)
                result["restore_throttled"] = {
                    "throttle_bytes_per_s_per_connection": args.throttle_mbps * 1e6,
                    **compare_restore(throttled, bucket, prefix, nbytes, args.files + 1, Path(tmp) / "t",
                                      args.concurrency)}
            finally:
                relay.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
