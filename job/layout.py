"""Every S3 key the project uses, built in one place (see docs/CONTRACTS.md)."""
from __future__ import annotations

import re
import time

_RUN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_run_name(run: str) -> str:
    if not isinstance(run, str) or not _RUN_NAME.fullmatch(run):
        raise ValueError(
            f"run name {run!r} is not valid: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit (it becomes part of S3 keys and a tmux session name)"
        )
    return run


def package_key(run: str) -> str:
    return f"packages/{check_run_name(run)}/job.tar.gz"


def active_run_key() -> str:
    """{"run": name, "package_key": key}: the run a freshly booted instance joins (written by `launcher train`)."""
    return "runs/active.json"


def run_prefix(run: str) -> str:
    return f"runs/{check_run_name(run)}/"


def spec_key(run: str) -> str:
    return run_prefix(run) + "spec.json"


def state_key(run: str) -> str:
    return run_prefix(run) + "state.json"


def lease_key(run: str) -> str:
    return run_prefix(run) + "lease.json"


def records_prefix(run: str) -> str:
    return run_prefix(run) + "records/"


def events_key(run: str, segment: str) -> str:
    return f"{records_prefix(run)}{segment}/events.jsonl"


def metrics_key(run: str, segment: str) -> str:
    return f"{records_prefix(run)}{segment}/metrics.jsonl"


def checkpoint_prefix(run: str) -> str:
    return f"checkpoints/{check_run_name(run)}/"


def checkpoint_key(run: str, global_step: int) -> str:
    return f"{checkpoint_prefix(run)}step-{int(global_step):09d}.pt"


def latest_checkpoint_key(run: str) -> str:
    return checkpoint_prefix(run) + "latest.json"


def dataset_prefix(name: str) -> str:
    return f"datasets/{check_run_name(name)}/"


def dataset_manifest_key(name: str) -> str:
    return dataset_prefix(name) + "manifest.json"


def segment_id(instance_id: str, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
    safe = re.sub(r"[^A-Za-z0-9-]", "-", instance_id or "unknown")
    return f"{stamp}-{safe}"
