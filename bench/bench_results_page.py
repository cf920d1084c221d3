"""Results page latency: the run list read with parallel S3 GETs (as shipped) against one-at-a-time reads.

    python -m bench.bench_results_page [--runs 24] [--repeat 5]

Writes `--runs` runs of three instance segments each (job.records.RunRecords) to a bucket on a local moto
server, then times the list page (every run's records read, summarised and rendered) with the shipped
8-way parallel reader and with a serial reader in the same process, plus one run's page and its size.
Moto on loopback answers in a few ms; real S3 GETs take tens of ms, so the gain on AWS is larger.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from infra.results_site.runtime import render, runs, summary, views
from job import s3 as s3mod
from job.testing.moto_server import MotoServer, aws_env
from tests.results.sample_runs import write_run


def list_page(s3, bucket: str, workers: int) -> str:
    histories = runs.load_runs(s3, bucket, workers=workers)
    now = time.time()
    return render.list_page([summary.summarize(h, now=now) for h in histories], now=now)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with MotoServer() as server, aws_env(server), tempfile.TemporaryDirectory() as work:
        s3mod._session.cache_clear()
        s3 = s3mod.client("s3")
        bucket = "bench-results"
        s3.create_bucket(Bucket=bucket)
        for i in tqdm(range(args.runs), desc="writing runs", unit="run"):
            write_run(s3, bucket, f"bench-run-{i:03d}", Path(work))
        serial_s, serial_html = timed(lambda: list_page(s3, bucket, workers=1), args.repeat)
        parallel_s, parallel_html = timed(lambda: list_page(s3, bucket, workers=8), args.repeat)
        assert serial_html.count("<tr>") == parallel_html.count("<tr>") == args.runs + 1
        run_s, view = timed(lambda: views.run_view(s3, bucket, "bench-run-000"), args.repeat)
        html = view.html()
    print(f"list page, {args.runs} runs x 3 segments (median of {args.repeat}):")
    print(f"  serial reads   {serial_s * 1000:8.1f} ms")
    print(f"  8-way parallel {parallel_s * 1000:8.1f} ms   speed-up x{serial_s / parallel_s:.2f}")
    print(f"run page: {run_s * 1000:.1f} ms, {len(html.encode()) / 1024:.1f} KiB of HTML with 5 inline SVG charts")


if __name__ == "__main__":
    main()
