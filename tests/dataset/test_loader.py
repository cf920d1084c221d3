"""job.loader on prepared real photos: determinism, independence of W/A/workers/resume, eval coverage, pixels."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from job.loader import IMAGENET_MEAN, IMAGENET_STD, EvalLoader, TrainLoader, num_classes
from job.prepare import prepare
from job.shards import PreparedNotFound, ShardReader, open_split
from job.transforms import dct_factor, decode_crop, random_resized_crop_box

RES = 64  # small crops keep the tests fast; the code path is the same at 176/224


@pytest.fixture(scope="module")
def data(hub_dataset, tmp_path_factory):
    source, _ = hub_dataset
    out = tmp_path_factory.mktemp("prepared-loader")
    prepare(source, out, workers=1, shard_images=150, progress=False)
    return out


def run_epoch(loader, epoch, resolution=RES, start_step=0, max_steps=None):
    loader.set_epoch(epoch, resolution=resolution, start_step=start_step)
    steps = []
    for index, step in enumerate(loader):
        steps.append([(x.clone(), y.clone()) for x, y in step])
        if max_steps is not None and index + 1 >= max_steps:
            break
    return steps


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return (images * std + mean).round().clamp(0, 255).to(torch.uint8)


def test_batches_shapes_dtypes_normalisation_and_channels_last(data):
    loader = TrainLoader(data, global_batch=32, accum=2, seed=0, workers=0, device=torch.device("cpu"))
    assert len(loader) == len(open_split(data, "train")) // 32 and num_classes(data) == 10
    steps = run_epoch(loader, 0, max_steps=2)
    assert len(steps) == 2 and all(len(step) == 2 for step in steps)
    x, y = steps[0][0]
    assert x.shape == (16, 3, RES, RES) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert y.dtype == torch.int64 and y.shape == (16,) and 0 <= int(y.min()) and int(y.max()) < 10
    # normalised: back-projected values span the uint8 range, the normalised mean is near 0
    raw = (x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) * 255
    assert -0.5 <= float(raw.min()) and float(raw.max()) <= 255.5 and float(raw.max()) > 200
    assert abs(float(x.mean())) < 1.0
    half = TrainLoader(data, global_batch=16, workers=0, dtype=torch.float16)
    half.set_epoch(0, resolution=RES)
    assert next(iter(half))[0][0].dtype == torch.float16


def test_same_seed_and_epoch_give_identical_batches_whatever_the_workers(data):
    a = run_epoch(TrainLoader(data, global_batch=32, seed=3, workers=0), 1, max_steps=3)
    b = run_epoch(TrainLoader(data, global_batch=32, seed=3, workers=2), 1, max_steps=3)
    for (xa, ya), (xb, yb) in zip((m for s in a for m in s), (m for s in b for m in s)):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    other_epoch = run_epoch(TrainLoader(data, global_batch=32, seed=3, workers=0), 2, max_steps=3)
    assert not all(torch.equal(s[0][1], t[0][1]) for s, t in zip(a, other_epoch))
    other_seed = run_epoch(TrainLoader(data, global_batch=32, seed=4, workers=0), 1, max_steps=3)
    assert not all(torch.equal(s[0][1], t[0][1]) for s, t in zip(a, other_seed))


def test_global_step_has_the_same_images_for_any_world_size_and_accumulation(data):
    def global_steps(world, accum):
        per_rank = [run_epoch(TrainLoader(data, global_batch=32, rank=r, world_size=world, accum=accum, seed=1,
                                          workers=0), 0, max_steps=2) for r in range(world)]
        return [(torch.cat([x for rank in per_rank for x, _ in rank[s]]),
                 torch.cat([y for rank in per_rank for _, y in rank[s]])) for s in range(2)]

    one_rank_two_micro = global_steps(1, 2)
    two_ranks_one_micro = global_steps(2, 1)
    four_micro_total = global_steps(2, 2)
    for s in range(2):
        for other in (two_ranks_one_micro, four_micro_total):
            assert torch.equal(one_rank_two_micro[s][0], other[s][0])
            assert torch.equal(one_rank_two_micro[s][1], other[s][1])


def test_resume_at_step_k_yields_exactly_the_rest_of_the_epoch(data):
    loader = TrainLoader(data, global_batch=48, accum=2, seed=5, workers=1)
    full = run_epoch(loader, 2)
    assert len(full) == len(loader) == len(open_split(data, "train")) // 48
    resumed = run_epoch(TrainLoader(data, global_batch=48, accum=2, seed=5, workers=0), 2, start_step=5)
    assert len(resumed) == len(full) - 5
    for step_full, step_resumed in zip(full[5:], resumed):
        for (xa, ya), (xb, yb) in zip(step_full, step_resumed):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the same persistent workers follow a change of resolution (progressive resizing)
    loader.set_epoch(3, resolution=32)
    assert next(iter(loader))[0][0].shape == (24, 3, 32, 32)


def test_train_crop_matches_a_full_decode_reference(data):
    """DCT-scaled decode + box resize is the RandomResizedCrop it claims to be (same box, same pixels ~)."""
    split = open_split(data, "train")
    loader = TrainLoader(data, global_batch=16, seed=7, workers=0, scale=(0.35, 1.0))
    loader.set_epoch(4, resolution=96)
    images, _ = next(iter(loader))[0]
    perm = loader.sampler.permutation(4)
    reader = ShardReader(split)
    for row in range(4):
        sample = int(perm[row])
        entry = split.entries[sample]
        rng = np.random.default_rng((7, 4, sample))
        left, top, w, h = random_resized_crop_box(rng, int(entry["height"]), int(entry["width"]), (0.35, 1.0))
        flip = rng.random() < 0.5
        with Image.open(io.BytesIO(bytes(reader.jpeg(sample)))) as full:
            ref = full.convert("RGB").resize((96, 96), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if flip:
            ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ours = to_uint8(images[row:row + 1])[0].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(ours - np.asarray(ref).astype(int)).mean() < 6


def test_eval_covers_every_image_once_across_ranks_with_center_crops(data):
    split = open_split(data, "validation")
    world = 3
    loaders = [EvalLoader(data, batch_size=16, rank=r, world_size=world, resolution=RES, resize=80,
                          workers=0) for r in range(world)]
    covered = np.concatenate([loader.samples for loader in loaders])
    assert np.array_equal(covered, np.arange(len(split)))
    labels, first = [], None
    for loader in loaders:
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(x.shape[1:] == (3, RES, RES) and x.is_contiguous(memory_format=torch.channels_last)
                   for x, _ in batches)
        labels += [y for _, y in batches]
        first = first if first is not None else batches[0][0]
    assert torch.equal(torch.cat(labels), torch.from_numpy(split.labels.astype(np.int64)))
    # sample 0: Resize(short side 80) + CenterCrop(64), done the plain way on the stored JPEG
    with Image.open(io.BytesIO(bytes(ShardReader(split).jpeg(0)))) as stored:
        w, h = stored.size
        scale = 80 / min(w, h)
        resized = stored.convert("RGB").resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
        left, top = (resized.width - RES) // 2, (resized.height - RES) // 2
        ref = np.asarray(resized.crop((left, top, left + RES, top + RES))).astype(int)
    ours = to_uint8(first[:1])[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - ref).mean() < 8


def test_bad_arguments_get_clear_errors(data, tmp_path):
    with pytest.raises(ValueError, match="smaller global batch"):
        TrainLoader(data, global_batch=10_000, workers=0)
    with pytest.raises(ValueError, match="multiple of world_size"):
        TrainLoader(data, global_batch=30, world_size=4, workers=0)
    with pytest.raises(PreparedNotFound, match="job.prepare"):
        TrainLoader(tmp_path, global_batch=8, workers=0)
    loader = TrainLoader(data, global_batch=32, workers=0)
    with pytest.raises(ValueError, match="start_step"):
        loader.set_epoch(0, resolution=RES, start_step=len(loader) + 1)


def test_bench_loader_prints_a_positive_rate(data):
    proc = subprocess.run([sys.executable, "-m", "job.bench_loader", "--data", str(data), "--workers", "1",
                           "--seconds", "1", "--json", "--resolution", "96", "--batch", "16"],
                          capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout)
    assert result["resolution"] == 96 and result["images_per_s"] > 0
    assert result["images"] > 0 and result["images"] % 16 == 0


@pytest.mark.parametrize("box_side, size, factor", [(500, 64, 4), (127, 64, 1), (128, 64, 2), (512, 64, 8),
                                                     (1024, 64, 8)])
def test_dct_factor_is_the_largest_power_of_two_keeping_the_crop_at_least_the_output(box_side, size, factor):
    assert dct_factor(box_side, box_side, size) == factor
    assert dct_factor(box_side, size, size) == 1   # one short side is enough to need the full-size decode


def test_dct_scaled_decode_crop_matches_the_full_size_decode():
    """A big crop to a small output is decoded at a reduced DCT scale; the pixels stay those of the full decode."""
    from skimage import data as photos
    import simplejpeg

    jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(photos.chelsea()), 90, "RGB", "420")  # 451 x 300 cat
    box = (40.0, 20.0, 400.0, 270.0)
    assert dct_factor(box[2], box[3], 64) == 4
    scaled, full = torch.empty(64, 64, 3, dtype=torch.uint8), torch.empty(64, 64, 3, dtype=torch.uint8)
    decode_crop(memoryview(jpeg), box, 64, True, scaled)
    decode_crop(memoryview(jpeg), box, 64, True, full, dct_scaling=False)
    difference = (scaled.int() - full.int()).abs().float()
    assert difference.mean() < 3 and not torch.equal(scaled, full)   # close, and really a different decode
    # the box is scaled with the image: a crop of the left half lands on the left half's pixels
    left = torch.empty(64, 64, 3, dtype=torch.uint8)
    decode_crop(memoryview(jpeg), (0.0, 0.0, 225.0, 300.0), 64, False, left, dct_scaling=False)
    left_scaled = torch.empty(64, 64, 3, dtype=torch.uint8)
    decode_crop(memoryview(jpeg), (0.0, 0.0, 225.0, 300.0), 64, False, left_scaled)
    assert dct_factor(225, 300, 64) == 2 and (left_scaled.int() - left.int()).abs().float().mean() < 3
