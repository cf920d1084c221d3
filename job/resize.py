"""One image for job.prepare: decode once (DCT-scaled), shrink the short side, re-encode as baseline RGB JPEG.

Each choice was measured per image on the real-photo set (bench/bench_prepare.py, BENCHMARKS.md "prepare"):
- Decode: libjpeg-turbo via simplejpeg, at the smallest *power-of-two* DCT scale (1/2, 1/4, 1/8) that still
  covers the target. libjpeg-turbo's other M/8 scales (5/8-7/8) run plain-C IDCTs: slower than a full-size
  decode, and further from a Lanczos reference. So an image less than 2x the target is decoded at full size.
  Chroma is upsampled the fast way (libjpeg-turbo's merged upsample+colour convert): ~4 % less decode time,
  no measurable difference once resized and re-encoded at 4:2:0. The fast IDCT was measurably worse: not used.
- Resize: OpenCV's bilinear (SIMD fixed point). After the power-of-two DCT scale the ratio left is < 2, where
  bilinear without antialiasing was *closer* to a Lanczos reference than torch's or PIL's antialiased
  bilinear (those blur more) and 3-8x faster.
- Encode: libjpeg-turbo via simplejpeg (no PIL Image round trip), accurate DCT, 4:2:0 like PIL's default;
  the fast DCT saved nothing measurable at this size.
Anything simplejpeg will not decode cleanly (PNG bytes, CMYK, a truncated file) goes through PIL, which
either converts it to RGB or raises the error that job.prepare records for a corrupt image.
"""
from __future__ import annotations

import io
import math

import cv2
import numpy as np
import simplejpeg
from PIL import Image

# Corrupt input raises one of these from PIL/libjpeg; anything else is a bug and should surface.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side shrunk to `short_side`; never enlarged."""
    scale = short_side / min(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def dct_reduction(width: int, height: int, target: tuple[int, int]) -> int:
    """Largest of 1, 2, 4, 8 whose libjpeg scaled size (ceil(side / n)) still covers the target."""
    factor = 1
    while factor < 8 and math.ceil(width / (2 * factor)) >= target[0] and math.ceil(height / (2 * factor)) >= target[1]:
        factor *= 2
    return factor


def _decode_jpeg_scaled(data: bytes, short_side: int):
    """(HxWx3 uint8 RGB, target) for any JPEG libjpeg-turbo reads cleanly (RGB or grayscale), else None.
    strict=True turns libjpeg's warnings on damaged data into ValueError, so a damaged file goes to PIL,
    which names the damage."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        target = target_size(width, height, short_side)
        factor = dct_reduction(width, height, target)
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=math.ceil(height / factor),
                                        min_width=math.ceil(width / factor), fastupsample=True, strict=True)
    except ValueError:
        return None
    return pixels, target


def _decode_with_pil(data: bytes, short_side: int):
    """Any format and mode PIL reads (grayscale, CMYK, PNG under a .JPEG name, ...) to (RGB array, target)."""
    with Image.open(io.BytesIO(data)) as image:
        target = target_size(*image.size, short_side)
        if image.format == "JPEG":
            image.draft("RGB", target)  # DCT scaling by 1/2..1/8 where that still covers the target
        return np.asarray(image.convert("RGB")), target


def resize_rgb(pixels: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 -> target (width, height), bilinear: meant for the < 2x shrink left after DCT scaling."""
    return cv2.resize(pixels, target, interpolation=cv2.INTER_LINEAR)


def single_threaded() -> int:
    """Make OpenCV run on the calling thread (job.prepare's parallelism is one process per core); returns
    the previous setting for restore_threads."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    return previous


def restore_threads(previous: int) -> None:
    cv2.setNumThreads(previous)


def resized_jpeg(data: bytes, short_side: int, quality: int) -> tuple[bytes, int, int]:
    """Decode, shrink the short side to `short_side` (never enlarge), encode baseline RGB JPEG: (bytes, h, w).
    Raises one of DECODE_ERRORS for corrupt data."""
    pixels, target = _decode_jpeg_scaled(data, short_side) or _decode_with_pil(data, short_side)
    if (pixels.shape[1], pixels.shape[0]) != target:
        pixels = resize_rgb(pixels, target)
    elif not pixels.flags.c_contiguous:
        pixels = np.ascontiguousarray(pixels)
    jpeg = simplejpeg.encode_jpeg(pixels, quality, "RGB", "420", fastdct=False)
    return jpeg, target[1], target[0]
