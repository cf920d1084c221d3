"""The job package: a byte-for-byte reproducible tar.gz of `job/` (with job/requirements.txt).

Same sources → same bytes → same sha256, so re-running `launcher train` re-uploads and re-extracts nothing
that did not change, and a replacement instance gets exactly the code the run started with.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import job

JOB_DIR = Path(job.__file__).resolve().parent
# Not needed on an instance: caches, tests and the local stand-ins (they run on the laptop side).
EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", "tests", "testing", ".mypy_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


@dataclass(frozen=True)
class Package:
    path: Path
    sha256: str
    size: int
    files: tuple[str, ...]


def package_files(job_dir: Path = JOB_DIR) -> list[Path]:
    files = []
    for path in sorted(job_dir.rglob("*")):
        rel = path.relative_to(job_dir)
        if any(part in EXCLUDED_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith(EXCLUDED_SUFFIXES):
            files.append(path)
    if not (job_dir / "requirements.txt").is_file():
        raise FileNotFoundError(f"{job_dir}/requirements.txt is missing: the instance installs from it")
    return files


def _tarinfo(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_bytes(job_dir: Path = JOB_DIR) -> tuple[bytes, list[str]]:
    raw = io.BytesIO()
    names = []
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in package_files(job_dir):
            name = "job/" + path.relative_to(job_dir).as_posix()
            data = path.read_bytes()
            tar.addfile(_tarinfo(name, len(data), bool(path.stat().st_mode & 0o111)), io.BytesIO(data))
            names.append(name)
    out = io.BytesIO()
    # mtime=0 and no file name keep the gzip header free of anything that varies between builds
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue(), names


def build(out_dir: Path, job_dir: Path = JOB_DIR) -> Package:
    """Write job.tar.gz into `out_dir` (rewritten only when its content changed)."""
    data, names = build_bytes(job_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "job.tar.gz"
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return Package(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=tuple(names))
