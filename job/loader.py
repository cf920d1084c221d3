"""DDP-aware, deterministic, resumable loaders over prepared shards (format: job/shards.py).

Order and augmentation (docs/CONTRACTS.md, "Loader"):
- The epoch's sample order is `perm = permutation(N)` from a generator seeded with (seed, epoch).
- Global step `s` consumes `perm[s*G:(s+1)*G]`; that block is cut into W*A micro-batches of B = G/(W*A)
  and rank r takes micro-batches r*A .. r*A+A-1 (its contiguous G/W), one per accumulation step.
- A sample's crop and flip come from a generator seeded with (seed, epoch, sample_index).
So the samples of a global step, and each one's pixels, are the same for any W, A, worker count or
resume step. drop_last: an epoch is N // G global steps; the last N % G samples of the permutation are not
seen that epoch (they are different samples every epoch). A split smaller than one global batch is an error.

Throughput: DataLoader workers each build one whole micro-batch (libjpeg-turbo decode + one antialiased
crop/resize pass, job/transforms.py) into a uint8 NHWC tensor; the main process moves uint8 to the
device (pinned, non_blocking on CUDA) and converts/normalises there. NHWC permuted to NCHW *is* the
channels_last layout, so no copy is needed for it. Workers persist across epochs; the epoch and resolution
travel with each micro-batch request, so progressive resizing needs no worker restart.

`decode="gpu"` (opt-in) ships the JPEG bytes to the main process and decodes with nvJPEG
(torchvision.io.decode_jpeg(device="cuda")); it is UNTESTED here (no GPU on the build machine) and kept to
one function, `_gpu_decode_batch`. The CPU path is the default everywhere because at 176 px it already
feeds a T4/A10G from 6-7 cores (bench/BENCHMARKS.md) and leaves the GPU to training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from job.shards import ShardReader, Split, open_split, read_index
from job.transforms import center_crop_box, decode_crop, random_resized_crop_box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop; FFCV recipes use (0.35, 1.0)


def num_classes(data_dir) -> int:
    return int(read_index(data_dir)["num_classes"])


@dataclass(frozen=True)
class _Request:
    """What a worker needs to build one micro-batch; carries the epoch and resolution with it."""

    samples: np.ndarray  # indices into the split
    epoch: int
    resolution: int
    resize: int = 0      # eval only: short side before the center crop


class _MicroBatches(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is a whole micro-batch request."""

    def __init__(self, split: Split, *, train: bool, seed: int, scale, raw: bool):
        self.reader = ShardReader(split)
        self.train, self.seed, self.scale, self.raw = train, seed, tuple(scale), raw

    def __len__(self) -> int:  # not used for sampling (the sampler yields requests)
        return len(self.reader.split)

    def _geometry(self, sample: int, request: _Request):
        entry = self.reader.split.entries[sample]
        height, width = int(entry["height"]), int(entry["width"])
        if not self.train:
            return center_crop_box(height, width, request.resolution, request.resize), False
        rng = np.random.default_rng((self.seed, request.epoch, sample))
        box = random_resized_crop_box(rng, height, width, self.scale)
        return box, bool(rng.random() < 0.5)

    def __getitem__(self, request: _Request):
        labels = torch.from_numpy(self.reader.split.labels[request.samples].astype(np.int64))
        if self.raw:  # GPU decode: ship bytes + geometry, decode in the main process
            geometry = [self._geometry(int(s), request) for s in request.samples]
            jpegs = [torch.frombuffer(bytearray(self.reader.jpeg(int(s))), dtype=torch.uint8) for s in request.samples]
            return jpegs, geometry, labels
        size = request.resolution
        batch = torch.empty((len(request.samples), size, size, 3), dtype=torch.uint8)
        for row, sample in enumerate(request.samples):
            box, flip = self._geometry(int(sample), request)
            decode_crop(self.reader.jpeg(int(sample)), box, size, flip, batch[row])
        return batch, labels


class _TrainRequests(torch.utils.data.Sampler):
    """Yields this rank's micro-batch requests for the current epoch, from start_step on."""

    def __init__(self, n: int, global_batch: int, rank: int, world_size: int, accum: int, seed: int):
        self.n, self.global_batch, self.rank, self.world, self.accum, self.seed = \
            n, global_batch, rank, world_size, accum, seed
        self.micro = global_batch // (world_size * accum)
        self.epoch, self.resolution, self.start_step = 0, 224, 0

    def steps(self) -> int:
        return self.n // self.global_batch

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(self.n)

    def __len__(self) -> int:
        return max(0, self.steps() - self.start_step) * self.accum

    def __iter__(self):
        perm = self.permutation(self.epoch)
        for step in range(self.start_step, self.steps()):
            block = perm[step * self.global_batch:(step + 1) * self.global_batch]
            for micro in range(self.accum):
                chunk = self.rank * self.accum + micro
                yield _Request(block[chunk * self.micro:(chunk + 1) * self.micro], self.epoch, self.resolution)


class _EvalRequests(torch.utils.data.Sampler):
    def __init__(self, samples: np.ndarray, batch_size: int, resolution: int, resize: int):
        self.samples, self.batch_size, self.resolution, self.resize = samples, batch_size, resolution, resize

    def __len__(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.samples), self.batch_size):
            yield _Request(self.samples[start:start + self.batch_size], 0, self.resolution, self.resize)


class _DeviceSide:
    """uint8 NHWC batches -> normalised float NCHW (channels_last) on the device."""

    def __init__(self, device, dtype):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).mul_(255).view(1, 3, 1, 1)
        self.inv_std = 1 / torch.tensor(IMAGENET_STD, device=self.device).mul_(255).view(1, 3, 1, 1)
        self.non_blocking = self.device.type == "cuda"

    def images(self, nhwc_uint8: torch.Tensor) -> torch.Tensor:
        nchw = nhwc_uint8.to(self.device, non_blocking=self.non_blocking).permute(0, 3, 1, 2)
        out = torch.sub(nchw, self.mean).mul_(self.inv_std).to(self.dtype)  # two passes; uint8 -> float in the first
        return out.contiguous(memory_format=torch.channels_last)

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.to(self.device, non_blocking=self.non_blocking)

    def batch(self, item, raw: bool, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One collated worker batch -> (images, labels) on the device; `raw` batches are decoded there."""
        if raw:
            jpegs, geometry, labels = item
            images = _gpu_decode_batch(jpegs, geometry, resolution, self.device)
        else:
            images, labels = item
        return self.images(images), self.labels(labels)


def _gpu_decode_batch(jpegs, geometry, size: int, device) -> torch.Tensor:
    """UNTESTED (no GPU here): nvJPEG decode of a micro-batch, crop/resize/flip on the GPU -> uint8 NHWC."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    out = []
    for image, ((left, top, w, h), flip) in zip(decoded, geometry):
        crop = image[:, int(top):int(top) + max(1, int(h)), int(left):int(left) + max(1, int(w))]
        crop = F.interpolate(crop.unsqueeze(0).float(), size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        out.append(crop.flip(-1) if flip else crop)
    return torch.cat(out).permute(0, 2, 3, 1)


def _data_loader(dataset, sampler, workers: int, device: torch.device, prefetch: int):
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None)


def _check_decode(decode: str, device: torch.device) -> bool:
    if decode not in ("cpu", "gpu"):
        raise ValueError(f"decode must be 'cpu' or 'gpu', not {decode!r}")
    if decode == "gpu" and device.type != "cuda":
        raise ValueError("decode='gpu' needs a CUDA device; use decode='cpu' (the default) on CPU")
    return decode == "gpu"


class TrainLoader:
    """One item per global step: a list of `accum` (images, labels) micro-batches for this rank."""

    def __init__(self, data_dir, split: str = "train", *, global_batch: int, rank: int = 0, world_size: int = 1,
                 accum: int = 1, seed: int = 0, workers: int = 4, device=None, scale=DEFAULT_SCALE,
                 dtype: torch.dtype = torch.float32, decode: str = "cpu", prefetch: int = 2):
        if world_size < 1 or not 0 <= rank < world_size or accum < 1:
            raise ValueError(f"need 0 <= rank < world_size and accum >= 1 (got rank={rank}, "
                             f"world_size={world_size}, accum={accum})")
        if global_batch % (world_size * accum):
            raise ValueError(f"global_batch {global_batch} must be a multiple of world_size*accum = "
                             f"{world_size * accum}: change the batch size or the accumulation steps")
        self.split = open_split(data_dir, split)
        if len(self.split) < global_batch:
            raise ValueError(f"split {split!r} of {data_dir} has {len(self.split)} images, fewer than one global "
                             f"batch ({global_batch}): use a smaller global batch")
        self.device_side = _DeviceSide(device, dtype)
        self.raw = _check_decode(decode, self.device_side.device)
        self.accum = accum
        self.sampler = _TrainRequests(len(self.split), global_batch, rank, world_size, accum, seed)
        self.dataset = _MicroBatches(self.split, train=True, seed=seed, scale=scale, raw=self.raw)
        self._loader = _data_loader(self.dataset, self.sampler, workers, self.device_side.device, prefetch)

    @property
    def micro_batch(self) -> int:
        return self.sampler.micro

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def resolution(self) -> int:
        return self.sampler.resolution

    def set_epoch(self, epoch: int, resolution: int = 224, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.sampler.steps():
            raise ValueError(f"start_step {start_step} is outside the epoch's 0..{self.sampler.steps()} steps")
        if resolution < 8:
            raise ValueError(f"resolution {resolution} is too small")
        self.sampler.epoch, self.sampler.resolution, self.sampler.start_step = epoch, resolution, start_step

    def __len__(self) -> int:
        return self.sampler.steps()

    def __iter__(self):
        step = []
        for item in self._loader:
            step.append(self.device_side.batch(item, self.raw, self.sampler.resolution))
            if len(step) == self.accum:
                yield step
                step = []


class EvalLoader:
    """Rank r gets the contiguous samples [r*N//W, (r+1)*N//W) in batches (the last may be smaller): every
    image exactly once across ranks, no padding, so per-rank sums all-reduced are exact."""

    def __init__(self, data_dir, split: str = "validation", *, batch_size: int, rank: int = 0, world_size: int = 1,
                 resolution: int = 224, resize: int = 256, workers: int = 4, device=None,
                 dtype: torch.dtype = torch.float32, decode: str = "cpu", prefetch: int = 2):
        if world_size < 1 or not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(f"need 0 <= rank < world_size and batch_size >= 1 (got {rank}, {world_size}, "
                             f"{batch_size})")
        if resolution > resize:
            raise ValueError(f"resolution {resolution} must not exceed resize {resize}")
        self.split = open_split(data_dir, split)
        n = len(self.split)
        self.samples = np.arange(rank * n // world_size, (rank + 1) * n // world_size)
        self.device_side = _DeviceSide(device, dtype)
        self.raw = _check_decode(decode, self.device_side.device)
        self.sampler = _EvalRequests(self.samples, batch_size, resolution, resize)
        self.dataset = _MicroBatches(self.split, train=False, seed=0, scale=DEFAULT_SCALE, raw=self.raw)
        self._loader = _data_loader(self.dataset, self.sampler, workers, self.device_side.device, prefetch)

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def set_resolution(self, resolution: int, resize: int | None = None) -> None:
        resize = resize or self.sampler.resize
        if resolution > resize:
            raise ValueError(f"resolution {resolution} must not exceed resize {resize}")
        self.sampler.resolution, self.sampler.resize = resolution, resize

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for item in self._loader:
            yield self.device_side.batch(item, self.raw, self.sampler.resolution)
