"""The job package is byte-for-byte reproducible and holds the job, not caches or tests."""
from __future__ import annotations

import io
import tarfile

from launcher import package


def test_package_is_deterministic_and_clean(tmp_path):
    job_dir = tmp_path / "job"
    (job_dir / "__pycache__").mkdir(parents=True)
    (job_dir / "testing").mkdir()
    (job_dir / "scripts").mkdir()
    (job_dir / "__init__.py").write_text("")
    (job_dir / "train.py").write_text("print('train')\n")
    (job_dir / "requirements.txt").write_text("torch==2.14.1\n")
    (job_dir / "scripts" / "run.sh").write_text("#!/bin/sh\n")
    (job_dir / "scripts" / "run.sh").chmod(0o775)
    (job_dir / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (job_dir / "testing" / "stand_in.py").write_text("")
    (job_dir / "notes.txt~").write_text("editor backup")

    first = package.build(tmp_path / "a", job_dir)
    # touching files (new mtimes) must not change a byte
    for path in job_dir.rglob("*.py"):
        path.touch()
    second = package.build(tmp_path / "b", job_dir)
    assert first.path.read_bytes() == second.path.read_bytes() and first.sha256 == second.sha256

    with tarfile.open(fileobj=io.BytesIO(first.path.read_bytes())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["job/__init__.py", "job/requirements.txt", "job/scripts/run.sh", "job/train.py"]
    assert members["job/scripts/run.sh"].mode == 0o755 and members["job/train.py"].mode == 0o644
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members.values())

    (job_dir / "train.py").write_text("print('changed')\n")
    assert package.build(tmp_path / "c", job_dir).sha256 != first.sha256


def test_real_job_package_has_the_bootstrap():
    data, names = package.build_bytes()
    assert "job/requirements.txt" in names and "job/bootstrap.py" in names and "job/runspec.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("job/testing/")]
