"""ResNet-50 training throughput on one GPU: synthetic input vs the real loader, and utilisation.

    python -m bench.bench_train_gpu [--data PREPARED] [--batch 256] [--steps 50] [--resolution 224] [--compile]

Measures images/s of full training steps (forward, backward, SGD step) with AMP (bf16 where the GPU has it,
fp16 + GradScaler otherwise, exactly job.train.amp_settings), channels_last and cudnn.benchmark:
1. synthetic: one random batch already on the GPU (the model's ceiling);
2. real loader: job.loader.TrainLoader over a prepared dataset (decode + crop in workers, H2D, normalise).
Baseline in the same run: the GPU's measured dense matmul peak (torch.matmul of 8192² in the AMP dtype).

FLOP convention: ResNet-50 at 224 px is 4.1 G multiply-adds per image forward = 8.2 GFLOP (a multiply and
an add counted separately); a training step costs ~3 forwards (backward ≈ 2 forwards) = 24.5 GFLOP per image
(the issue's figure), scaled by (resolution / 224)². Utilisation = images/s × that / measured matmul peak.

Without a GPU the script still runs (float32, tiny defaults) so it stays runnable here; its CPU numbers say
nothing about a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from job.models import build_model
from job.train import amp_settings

GFLOP_PER_IMAGE_224 = 24.5
REPO = Path(__file__).resolve().parents[1]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device, dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e12


class Step:
    """One training step of the trainer's kind (AMP, channels_last, SGD momentum, label smoothing)."""

    def __init__(self, device, num_classes: int, compile_model: bool):
        self.device = device
        self.autocast, self.dtype, use_scaler = amp_settings("auto", device)
        model = build_model("resnet50", num_classes).to(device).to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile_model else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def __call__(self, images, labels):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            loss = self.criterion(self.model(images), labels)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def timed(step: Step, batches, steps: int, warmup: int, batch: int) -> float:
    from tqdm import tqdm

    for _ in range(warmup):
        step(*next(batches))
    _sync(step.device)
    started = time.perf_counter()
    for _ in tqdm(range(steps), desc="steps", mininterval=5):
        step(*next(batches))
    _sync(step.device)
    return steps * batch / (time.perf_counter() - started)


def synthetic_batches(device, batch: int, resolution: int, num_classes: int):
    images = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    while True:
        yield images, labels


def loader_batches(data: Path, device, batch: int, resolution: int, workers: int):
    from job.loader import TrainLoader

    loader = TrainLoader(data, "train", global_batch=batch, workers=workers, device=device, seed=0)
    epoch = 0
    while True:
        loader.set_epoch(epoch, resolution=resolution)
        for (micro,) in loader:
            yield micro
        epoch += 1


def _photo_dataset(workdir: Path) -> Path:
    """The real-photo test set, prepared by the real command (when no --data is given)."""
    from job.testing.photos import make_hub_dataset

    make_hub_dataset(workdir / "hub", train_per_class=80)
    out = workdir / "prepared"
    subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(workdir / "hub"), "--out", str(out)],
                   cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    return out


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="prepared dataset (default: the real-photo set, prepared now)")
    parser.add_argument("--batch", type=int, default=256 if cuda else 8)
    parser.add_argument("--resolution", type=int, default=224 if cuda else 64)
    parser.add_argument("--steps", type=int, default=50 if cuda else 3)
    parser.add_argument("--warmup", type=int, default=10 if cuda else 1)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    autocast, dtype, use_scaler = amp_settings("auto", device)
    peak_dtype = dtype or torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _photo_dataset(Path(tmp))
        from job.loader import num_classes

        classes = num_classes(data)
        step = Step(device, classes, args.compile)
        synthetic = timed(step, synthetic_batches(device, args.batch, args.resolution, classes), args.steps,
                          args.warmup, args.batch)
        real = timed(step, loader_batches(data, device, args.batch, args.resolution, args.workers), args.steps,
                     args.warmup, args.batch)
    peak = matmul_peak_tflops(device, peak_dtype, 8192 if cuda else 1024, 20 if cuda else 3)
    gflop = GFLOP_PER_IMAGE_224 * (args.resolution / 224) ** 2
    report = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu (smoke run only: not a GPU measurement)",
        "amp": str(dtype) if autocast else "off", "grad_scaler": use_scaler, "batch": args.batch,
        "resolution": args.resolution, "compile": args.compile, "loader_workers": args.workers,
        "images_per_s_synthetic": round(synthetic, 1), "images_per_s_real_loader": round(real, 1),
        "loader_vs_synthetic": round(real / synthetic, 3),
        "gflop_per_image": round(gflop, 2), "matmul_peak_tflops": round(peak, 2),
        "achieved_tflops_synthetic": round(synthetic * gflop / 1e3, 2),
        "utilisation_synthetic": round(synthetic * gflop / 1e3 / peak, 3),
        "utilisation_real_loader": round(real * gflop / 1e3 / peak, 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
