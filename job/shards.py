"""The prepared-dataset format: big shards of concatenated JPEG bytes plus a fixed-width numpy index.

Layout of a prepared directory (`job.paths.prepared_dir`)::

    index.json                      written last: splits, shard files, counts, sizes, sha256, skipped files
    classes.json                    {"names": [...]} in label order
    shards/<split>-NNNNN.bin        JPEG files back to back (baseline, RGB, 4:2:0), nothing in between
    shards/<split>-NNNNN.idx.npy    one INDEX_DTYPE row per image: offset, length, label, height, width
    shards/<split>-NNNNN.json       the shard's record (counts, sizes, sha256, skipped files); written
                                    last, so it doubles as the "this shard is complete" marker

Why this format and not webdataset tar, parquet or litdata:
- Training wants a *global* shuffle every epoch (the loader's order is a permutation of the whole split),
  so reads are random. With an (offset, length) index and `np.memmap` a sample is one slice of a
  page-cached file: no per-sample header parsing (tar), no row-group decompression (parquet), no
  extra dependency (litdata), and nothing is copied until PIL/libjpeg reads the bytes.
- Height and width are in the index, so RandomResizedCrop picks its box before decoding and the
  decoder can use DCT scaling (PIL `draft`) for just the resolution the crop needs.
- The index of all 1.28M ImageNet images is 1.28M x 24 B = 31 MB: every worker holds it in memory.
- Shards are plain files of >= 100 MB (by default), which is what S3 multipart transfers and the
  restore step want; each shard carries its own sha256 in index.json and its record.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.integrity import sha256_file  # re-exported: prepare and checkpoint hash through here

FORMAT = "spot-jpeg-shards"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
CLASSES_FILE = "classes.json"
SHARD_DIR = "shards"

INDEX_DTYPE = np.dtype([("offset", "<u8"), ("length", "<u4"), ("label", "<i4"), ("height", "<u2"), ("width", "<u2"),
                        ("source_row", "<u4")])


def shard_stem(split: str, shard: int) -> str:
    return f"{SHARD_DIR}/{split}-{shard:05d}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp name, fsync, rename: a reader sees the whole file or none of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


class PreparedNotFound(FileNotFoundError):
    pass


def read_index(data_dir) -> dict:
    path = Path(data_dir) / INDEX_FILE
    if not path.exists():
        raise PreparedNotFound(
            f"{path} does not exist: {data_dir} is not a prepared dataset (or its prepare did not finish). "
            f"Run `python -m job.prepare --source <hub dir> --out {data_dir}` first.")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is format {index.get('format')} v{index.get('version')}, this code reads "
                         f"{FORMAT} v{FORMAT_VERSION}: prepare the dataset again into a new directory.")
    return index


def read_classes(data_dir) -> list[str]:
    return json.loads((Path(data_dir) / CLASSES_FILE).read_text())["names"]


@dataclass
class Split:
    """All images of one split: the concatenated index and the shard files it points into."""

    data_dir: Path
    name: str
    entries: np.ndarray      # INDEX_DTYPE, one row per image, in shard order
    shard_of: np.ndarray     # int32 shard number of each row
    shard_files: list[str]   # relative .bin paths, by shard number

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        return self.entries["label"]


def open_split(data_dir, split: str) -> Split:
    data_dir = Path(data_dir)
    index = read_index(data_dir)
    if split not in index["splits"]:
        raise KeyError(f"split {split!r} is not in {data_dir / INDEX_FILE}; it has {sorted(index['splits'])}")
    shards = index["splits"][split]["shards"]
    parts = [np.load(data_dir / shard["index"]) for shard in shards]
    entries = np.concatenate(parts) if parts else np.zeros(0, INDEX_DTYPE)
    shard_of = np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)]) if parts \
        else np.zeros(0, np.int32)
    return Split(data_dir, split, entries, shard_of, [shard["data"] for shard in shards])


class ShardReader:
    """Zero-copy access to image bytes: one read-only memory map per shard, opened on first use.

    Opened lazily so a reader can be pickled into DataLoader worker processes before any map exists.
    """

    def __init__(self, split: Split):
        self.split = split
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self):
        return {"split": self.split, "_maps": {}}

    def jpeg(self, sample: int) -> memoryview:
        shard = int(self.split.shard_of[sample])
        mapped = self._maps.get(shard)
        if mapped is None:
            path = self.split.data_dir / self.split.shard_files[shard]
            mapped = self._maps[shard] = np.memmap(path, dtype=np.uint8, mode="r")
        entry = self.split.entries[sample]
        start = int(entry["offset"])
        return memoryview(mapped[start:start + int(entry["length"])])
