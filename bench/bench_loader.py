"""Training loader images/s per core vs torchvision ImageFolder + PIL on the original loose files.

    python -m bench.bench_loader [--classes 16] [--per-class 80] [--seconds 10]

Same run, same real-photo images (job/testing/photos.py), one process each (DataLoader workers=0, so the
figures are per core):
- baseline: the original-size JPEGs as loose files in class folders, torchvision `ImageFolder` + PIL with
  RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize, shuffled, batch 64;
- ours: `job.loader.TrainLoader` over `job.prepare` shards (default short side), batch 64, at 176 px (the
  progressive-resizing middle) and at 224 px (like for like with the baseline's output size).
Also: the decode+crop step alone, ours (torchvision.io.decode_jpeg + antialiased uint8 channels_last resize)
vs PIL with draft (DCT scaling) + PIL resize(box=...), on the same stored images, to back the CPU decoder.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from job.bench_loader import measure
from job.prepare import prepare
from job.shards import ShardReader, open_split
from job.testing.photos import make_hub_dataset
from job.transforms import decode_crop, random_resized_crop_box


def write_loose_files(source: Path, out: Path, names: list[str]) -> int:
    count = 0
    for path in sorted((source / "data").glob("train-*.parquet")):
        table = pq.read_table(path)
        for image, label in zip(table.column("image").to_pylist(), table.column("label").to_pylist()):
            folder = out / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / Path(image["path"]).name).write_bytes(image["bytes"])
            count += 1
    return count


def imagefolder_rate(root: Path, seconds: float, batch: int = 64) -> dict:
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), transform), batch_size=batch,
                                         shuffle=True, num_workers=0, drop_last=True)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for x, _ in loader:
            if x.shape[1:] == (3, 224, 224):
                images += x.shape[0]
            if time.perf_counter() - started >= seconds:
                break
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(images / elapsed, 1), "images": images, "seconds": round(elapsed, 3),
            "resolution": 224}


def decoder_comparison(data: Path, resolution: int = 176, limit: int = 300, rounds: int = 3) -> dict:
    """ms per image for decode + RandomResizedCrop + flip, best of `rounds`, on the stored shard images."""
    split = open_split(data, "train")
    reader = ShardReader(split)
    jobs = []
    for sample in range(min(limit, len(split))):
        entry = split.entries[sample]
        rng = np.random.default_rng((0, 0, sample))
        box = random_resized_crop_box(rng, int(entry["height"]), int(entry["width"]))
        jobs.append((bytes(reader.jpeg(sample)), box, bool(rng.random() < 0.5)))

    def ours():
        out = torch.empty((resolution, resolution, 3), dtype=torch.uint8)
        for jpeg, box, flip in jobs:
            decode_crop(jpeg, box, resolution, flip, out)

    def pil_draft():
        for jpeg, (left, top, w, h), flip in jobs:
            with Image.open(io.BytesIO(jpeg)) as image:
                sw, sh = image.size
                image.draft("RGB", (math.ceil(sw * resolution / w), math.ceil(sh * resolution / h)))
                fx, fy = image.size[0] / sw, image.size[1] / sh
                out = image.resize((resolution, resolution), Image.Resampling.BILINEAR,
                                   box=(left * fx, top * fy, (left + w) * fx, (top + h) * fy))
            if flip:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            np.asarray(out)

    result = {}
    for name, fn in (("ours_torchvision_ms", ours), ("pil_draft_ms", pil_draft)):
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        result[name] = round(1000 * best / len(jobs), 3)
    result["ours_speedup"] = round(result["pil_draft_ms"] / result["ours_torchvision_ms"], 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parallel-workers", type=int, default=2, help="also measure ours with this many workers")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # per-core figures on both sides
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        tmp = Path(tmp)
        summary = make_hub_dataset(tmp / "hub", num_classes=args.classes, train_per_class=args.per_class,
                                   val_per_class=2, train_shards=4, quirks=False)
        write_loose_files(tmp / "hub", tmp / "loose", summary["classes"])
        prepared = prepare(tmp / "hub", tmp / "prepared", workers=1, splits=["train"], progress=False)
        result = {"images": summary["counts"]["train"], "short_side": None}
        result["short_side"] = json.loads((tmp / "prepared/index.json").read_text())["short_side"]
        result["baseline_imagefolder_224"] = imagefolder_rate(tmp / "loose", args.seconds)
        ours_176 = measure(tmp / "prepared", workers=0, seconds=args.seconds, resolution=176)
        ours_224 = measure(tmp / "prepared", workers=0, seconds=args.seconds, resolution=224)
        base = result["baseline_imagefolder_224"]["images_per_s"]
        result["ours_176"] = {k: ours_176[k] for k in ("images_per_s", "images", "seconds")}
        result["ours_224"] = {k: ours_224[k] for k in ("images_per_s", "images", "seconds")}
        result["speedup_per_core_176"] = round(ours_176["images_per_s"] / base, 2)
        result["speedup_per_core_224"] = round(ours_224["images_per_s"] / base, 2)
        if args.parallel_workers > 1:
            parallel = measure(tmp / "prepared", workers=args.parallel_workers, seconds=args.seconds,
                               resolution=176)
            result[f"ours_176_workers_{args.parallel_workers}"] = parallel["images_per_s"]
        result["decode_crop_176"] = decoder_comparison(tmp / "prepared")
        result["prepared_images"] = prepared["images"]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
