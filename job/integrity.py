"""Local file integrity shared by the Hub download and the S3 restore: checksums, a verification cache, disk room.

Both steps must skip files that are already complete, and on ImageNet that is ~150 GB of parquet or tens of GB of
shards: re-hashing all of it on every re-run would cost minutes. So the first verification of a file is recorded
in a small sidecar (`.verified.json` in the directory) as (size, mtime_ns, digest); a later run trusts a file whose
size and mtime still match the record, and hashes only what changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

SIDECAR_NAME = ".verified.json"
_CHUNK = 8 * 1024 * 1024  # large reads: hashlib releases the GIL, so worker threads hash in parallel


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path | str) -> str:
    """The git object id of a file: what the Hub reports for files not stored in LFS."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def ensure_free_space(directory: Path | str, needed: int, what: str) -> None:
    """Refuse to start a transfer that cannot fit, before writing anything."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(
            f"not enough free disk space in {directory}: {what} needs {human_bytes(needed)} "
            f"({needed} bytes) but only {human_bytes(free)} is free. Free up {human_bytes(needed - free)} "
            "or point the data directory (SPOT_DATA_DIR / --out / --dir) at a larger volume."
        )


class VerifiedFiles:
    """The sidecar of files under `root` whose digest was checked, keyed by their '/'-separated relative path."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.path = self.root / SIDECAR_NAME
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, dict] = json.loads(self.path.read_text()).get("files", {})
        except FileNotFoundError:
            self._entries = {}
        except (json.JSONDecodeError, AttributeError):
            self._entries = {}  # a torn sidecar only costs a re-hash; it never makes a bad file look good

    def is_verified(self, relpath: str, size: int, digest: str) -> bool:
        """True when the file is present with this size and its recorded digest matches (no hashing)."""
        entry = self._entries.get(relpath)
        try:
            stat = (self.root / relpath).stat()
        except FileNotFoundError:
            return False
        return (
            entry is not None
            and entry.get("digest") == digest
            and entry.get("size") == size == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
        )

    def check(self, relpath: str, size: int, digest: str, algorithm: str = "sha256") -> bool:
        """Is the local file complete and correct? Uses the record when it still applies, else hashes and records."""
        if self.is_verified(relpath, size, digest):
            return True
        path = self.root / relpath
        try:
            if path.stat().st_size != size:
                return False
        except FileNotFoundError:
            return False
        actual = hash_file(path, algorithm)
        if actual != digest:
            return False
        self.record(relpath, digest, algorithm)
        return True

    def sha256(self, relpath: str) -> str:
        """The file's sha256, from the record while size and mtime still match it, else hashed (and recorded)."""
        entry = self._entries.get(relpath)
        stat = (self.root / relpath).stat()
        if (entry is not None and entry.get("algorithm", "sha256") == "sha256" and entry.get("size") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns):
            return entry["digest"]
        digest = sha256_file(self.root / relpath)
        self.record(relpath, digest)
        return digest

    def record(self, relpath: str, digest: str, algorithm: str = "sha256") -> None:
        stat = (self.root / relpath).stat()
        with self._lock:
            self._entries[relpath] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": digest,
                                      "algorithm": algorithm}
            self._save()

    def forget(self, relpath: str) -> None:
        with self._lock:
            if self._entries.pop(relpath, None) is not None:
                self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"files": self._entries}, sort_keys=True))
        os.replace(tmp, self.path)


def hash_file(path: Path | str, algorithm: str = "sha256") -> str:
    if algorithm == "sha256":
        return sha256_file(path)
    if algorithm == "git-sha1":
        return git_blob_sha1(path)
    raise ValueError(f"unknown digest algorithm {algorithm!r}")
