"""Shared plumbing of the local stand-ins: stopping their processes, scoping environment variables."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not gone within `timeout`; always reaps it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def scoped_environ(values: dict[str, str], hide=()):
    """Set `values` (and unset the names in `hide`) in os.environ for the block, then restore everything."""
    hidden = [key for key in hide if key in os.environ]
    saved = {key: os.environ.get(key) for key in [*values, *hidden]}
    for key in hidden:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
