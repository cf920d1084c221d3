"""A small ImageNet-format dataset made from real photographs (scikit-image's sample images).

Writes exactly the Hub layout of ILSVRC/imagenet-1k: `data/<split>-NNNNN-of-MMMMM.parquet` with columns
`image` = struct{bytes, path} and `label` = int64, and the `huggingface` schema metadata that names the
classes. One class per source photo; each image is a random crop, rescale, flip and colour jitter of it,
at ImageNet-typical sizes, JPEG quality 75-95. With `quirks=True` a few files are grayscale, CMYK,
PNG bytes under a .JPEG name, and corrupt, as in the real data.
"""
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

# Photographs only (skimage.data loaders that need no download); the order fixes the label ids.
PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "stereo_motorcycle", "camera", "coins", "moon", "brick", "grass", "gravel", "clock", "colorwheel",
)
MAX_CLASSES = len(PHOTOS)


def _source(name: str):
    import numpy as np
    import skimage.data
    from PIL import Image

    array = getattr(skimage.data, name)()
    if isinstance(array, tuple):
        array = array[0]
    if array.dtype != np.uint8:
        array = (array.astype("float32") * (255.0 / max(float(array.max()), 1e-6))).astype("uint8")
    image = Image.fromarray(array)
    return image.convert("RGB")


def _variant(photo, rng: random.Random):
    from PIL import Image, ImageEnhance

    w, h = photo.size
    scale = rng.uniform(0.45, 1.0)
    cw, ch = max(16, int(w * scale * rng.uniform(0.8, 1.0))), max(16, int(h * scale * rng.uniform(0.8, 1.0)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = photo.crop((x, y, x + cw, y + ch))
    # ImageNet-typical: mostly 300-500 px on the long side, one in eight larger.
    long_side = rng.randint(300, 500) if rng.random() > 0.125 else rng.randint(600, 1000)
    factor = long_side / max(cw, ch)
    img = img.resize((max(8, round(cw * factor)), max(8, round(ch * factor))), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    return img


def _encode(img, rng: random.Random, quirk: str | None) -> bytes:
    buf = io.BytesIO()
    quality = rng.randint(75, 95)
    if quirk == "grayscale":
        img.convert("L").save(buf, "JPEG", quality=quality)
    elif quirk == "cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=quality)
    elif quirk == "png":
        img.save(buf, "PNG")
    else:
        img.save(buf, "JPEG", quality=quality)
    data = buf.getvalue()
    if quirk == "corrupt":
        data = data[: len(data) // 3]  # a truncated download: header fine, scan data cut
    return data


def _quirk_for(index: int, quirks: bool) -> str | None:
    if not quirks:
        return None
    return {3: "grayscale", 7: "cmyk", 11: "png", 13: "corrupt"}.get(index % 97)


def class_names(num_classes: int) -> list[str]:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be 2..{MAX_CLASSES} (one class per bundled photograph)")
    return [f"n{idx:08d}_{name}" for idx, name in enumerate(PHOTOS[:num_classes])]


def _hf_metadata(names: list[str]) -> bytes:
    features = {
        "image": {"_type": "Image"},
        "label": {"names": names, "_type": "ClassLabel"},
    }
    return json.dumps({"info": {"features": features}}).encode()


def make_hub_dataset(out_dir, *, num_classes: int = 10, train_per_class: int = 40, val_per_class: int = 10,
                     train_shards: int = 2, val_shards: int = 1, seed: int = 0, quirks: bool = True) -> dict:
    """Write the dataset under out_dir/data/ and return a summary (files, counts, class names)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    names = class_names(num_classes)
    photos = [_source(name) for name in PHOTOS[:num_classes]]
    schema = pa.schema(
        [pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
         pa.field("label", pa.int64())],
        metadata={b"huggingface": _hf_metadata(names)},
    )
    summary = {"classes": names, "files": [], "counts": {}, "quirks": {}}
    for split, per_class, shards, split_seed in (("train", train_per_class, train_shards, seed),
                                                 ("validation", val_per_class, val_shards, seed + 1)):
        rng = random.Random(split_seed)
        rows = []
        for index in range(per_class * num_classes):
            label = index % num_classes
            quirk = _quirk_for(index, quirks)
            data = _encode(_variant(photos[label], rng), rng, quirk)
            rows.append(({"bytes": data, "path": f"{split}_{index:06d}.JPEG"}, label))
            if quirk:
                summary["quirks"].setdefault(split, {})[quirk] = summary["quirks"].get(split, {}).get(quirk, 0) + 1
        rng.shuffle(rows)
        summary["counts"][split] = len(rows)
        for shard in range(shards):
            part = rows[shard::shards]
            table = pa.Table.from_pydict({"image": [r[0] for r in part], "label": [r[1] for r in part]}, schema=schema)
            name = f"data/{split}-{shard:05d}-of-{shards:05d}.parquet"
            pq.write_table(table, out / name, row_group_size=64)
            summary["files"].append(name)
    (out / "README.md").write_text("---\nlicense: other\n---\nReal-photo test set in the ILSVRC/imagenet-1k layout.\n")
    summary["files"].append("README.md")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--train-shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-quirks", action="store_true")
    args = parser.parse_args(argv)
    summary = make_hub_dataset(args.out, num_classes=args.classes, train_per_class=args.train_per_class,
                               val_per_class=args.val_per_class, train_shards=args.train_shards, seed=args.seed,
                               quirks=not args.no_quirks)
    print(json.dumps({k: summary[k] for k in ("counts", "quirks", "files")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
