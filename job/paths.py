"""Where things live on an instance's data disk (rooted at SPOT_DATA_DIR)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = "/data"


def data_dir() -> Path:
    return Path(os.environ.get("SPOT_DATA_DIR", DEFAULT_DATA_DIR))


def hub_dir(repo_id: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / "hub" / repo_id.replace("/", "--")


def prepared_dir(dataset_name: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / "prepared" / dataset_name


def package_dir(run: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / "pkg" / run


def run_dir(run: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / "runs" / run


def tmux_session(run: str) -> str:
    return f"spot-{run}"
