"""Measure the training loader's throughput on a prepared dataset; prints one JSON object.

    python -m job.bench_loader --data OUT --workers N --seconds S --json [--resolution 176] [--batch 64]

Counts only images delivered as (batch, 3, resolution, resolution) tensors; the clock starts when the first
batch arrives (worker start-up is reported separately as startup_s) and runs over as many epochs as fit.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from job.loader import TrainLoader


def measure(data, *, workers: int, seconds: float, resolution: int = 176, batch: int = 64, split: str = "train",
            device: str = "cpu", decode: str = "cpu", scale=(0.08, 1.0)) -> dict:
    created = time.perf_counter()
    loader = TrainLoader(data, split, global_batch=batch, seed=0, workers=workers, device=torch.device(device),
                         scale=scale, decode=decode)
    expected = (3, resolution, resolution)
    images, batches, started, epoch = 0, 0, None, 0
    deadline = None
    while deadline is None or time.perf_counter() < deadline:
        loader.set_epoch(epoch, resolution=resolution)
        for step in loader:
            for x, _ in step:
                if started is None:  # first batch: start the clock now
                    started = time.perf_counter()
                    deadline = started + seconds
                    startup = started - created
                    continue
                if tuple(x.shape[1:]) == expected:
                    images += x.shape[0]
                    batches += 1
            if time.perf_counter() >= deadline:
                break
        epoch += 1
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(images / elapsed, 1), "resolution": resolution, "images": images,
            "batches": batches, "seconds": round(elapsed, 3), "startup_s": round(startup, 3), "workers": workers,
            "batch": batch, "epochs": epoch, "device": device, "decode": decode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset dir")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--resolution", type=int, default=176)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--split", default="train")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decode", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = measure(args.data, workers=args.workers, seconds=args.seconds, resolution=args.resolution,
                     batch=args.batch, split=args.split, device=args.device, decode=args.decode)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['images_per_s']} images/s at {result['resolution']} px "
              f"({result['images']} images in {result['seconds']} s, {args.workers} workers)")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
