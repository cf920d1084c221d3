"""`launcher --help` is fast and imports none of the heavy libraries."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.launcher.conftest import ROOT

HEAVY = ("torch", "numpy", "boto3", "botocore", "fabric", "paramiko", "rich")


def test_help_is_fast_and_light():
    probe = ("import sys, json, runpy\n"
             "sys.argv = ['launcher', '--help']\n"
             "try:\n    runpy.run_module('launcher', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert "launcher" in loaded and "click" in loaded
    assert not loaded & set(HEAVY), f"imported at --help: {sorted(loaded & set(HEAVY))}"
    for command in ("up", "train", "status", "logs", "resume", "ssh", "teardown", "drill"):
        assert command in result.stdout

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "launcher", "--help"], capture_output=True, cwd=ROOT, check=True)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.5, f"launcher --help took {min(timings):.2f}s (best of 3)"
