"""`launcher --help` start-up: lazy imports (ours) vs the same CLI with its libraries imported up front.

    python -m bench.bench_launcher [--repeats 9]

Baseline, measured in the same run: the interpreter imports click, rich, boto3 and fabric (what the command
modules need) before running the identical click group, i.e. what a CLI with top-level imports costs.
Reports the median wall time of each over `--repeats` runs and the ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = [sys.executable, "-m", "launcher", "--help"]
EAGER = [sys.executable, "-c", "import click, rich.console, boto3, fabric, paramiko\n"
                               "from launcher.cli import main\nmain(['--help'])"]


def median_wall(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=REPO, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    median_wall(OURS, 1)                       # warm the page cache for both
    median_wall(EAGER, 1)
    ours, eager = median_wall(OURS, args.repeats), median_wall(EAGER, args.repeats)
    print(json.dumps({"launcher_help_s": round(ours, 3), "eager_imports_help_s": round(eager, 3),
                      "speedup": round(eager / ours, 2), "repeats": args.repeats}))


if __name__ == "__main__":
    main()
