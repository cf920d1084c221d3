"""Crop geometry and the CPU decode path of the loader (runs in DataLoader workers).

The crop box is chosen from the stored height/width (in the shard index) before any decoding. Decoding is
torchvision.io.decode_jpeg (libjpeg-turbo) and the crop+resize is torch's antialiased bilinear on a uint8
channels_last view (its AVX2 fast path). Measured on the prepared shards at 176 px (bench/BENCHMARKS.md):
this is ~1.8x faster than PIL with `draft` DCT scaling + PIL resize(box=...). DCT scaling does not pay here
because prepare already stored the images at a short side (192) close to the training resolution, so a crop
is almost never >= 2x the output size, which is when libjpeg's 1/2 scale could apply. When it does (a crop
>= 2x the output on both sides: a dataset prepared at a larger short side, low-resolution epochs of progressive
resizing, validation crops of big stored images), `decode_crop` lets libjpeg-turbo decode at 1/2, 1/4 or 1/8
scale (simplejpeg, the power-of-two scales only, as job/resize.py measured) and crops the scaled image.
"""
from __future__ import annotations

import math

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

Box = tuple[float, float, float, float]  # left, top, width, height in stored-image pixels

LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int, scale=(0.08, 1.0)) -> Box:
    """torchvision's RandomResizedCrop.get_params, drawing from a numpy Generator."""
    area = height * width
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*LOG_RATIO))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return float(left), float(top), float(w), float(h)
    # Fallback: the whole image, cut to the allowed aspect range, centred (as torchvision does).
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif in_ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    return float((width - w) // 2), float((height - h) // 2), float(w), float(h)


def center_crop_box(height: int, width: int, resolution: int, resize: int) -> Box:
    """Resize(short side -> resize) then CenterCrop(resolution), expressed as one box on the stored image."""
    side = min(height, width) * resolution / resize
    return (width - side) / 2, (height - side) / 2, side, side


def dct_factor(box_width: float, box_height: float, size: int) -> int:
    """Largest of 1, 2, 4, 8 that still leaves the crop at least `size` px on both sides once scaled."""
    factor = 1
    while factor < 8 and box_width / (2 * factor) >= size and box_height / (2 * factor) >= size:
        factor *= 2
    return factor


def _decode_scaled(data: bytes, factor: int) -> tuple[torch.Tensor, int, int]:
    """libjpeg-turbo decode at 1/factor scale (DCT scaling: fewer coefficients inverse-transformed): CHW uint8,
    and the full-size height and width the box is measured in."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=math.ceil(height / factor),
                                    min_width=math.ceil(width / factor))
    return torch.from_numpy(pixels).permute(2, 0, 1), height, width


def decode_crop(jpeg, box: Box, size: int, flip: bool, out: torch.Tensor, dct_scaling: bool = True) -> None:
    """Decode, crop `box`, resize to size x size (antialiased bilinear), maybe flip, into `out` (HWC uint8).
    With dct_scaling, a crop >= 2x the output is decoded at a reduced DCT scale and the box scaled to match."""
    left, top, w, h = box
    factor = dct_factor(w, h, size) if dct_scaling else 1
    if factor > 1:
        image, full_height, full_width = _decode_scaled(bytes(jpeg), factor)
        _, height, width = image.shape
        sx, sy = width / full_width, height / full_height
        left, top, w, h = left * sx, top * sy, w * sx, h * sy
    else:
        image = decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8), mode=ImageReadMode.RGB)
        _, height, width = image.shape
    x0, y0 = min(width - 1, max(0, round(left))), min(height - 1, max(0, round(top)))
    x1, y1 = max(x0 + 1, min(width, round(left + w))), max(y0 + 1, min(height, round(top + h)))
    crop = image[:, y0:y1, x0:x1].unsqueeze(0).contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    hwc = resized[0].permute(1, 2, 0)
    out.copy_(hwc.flip(1) if flip else hwc)
