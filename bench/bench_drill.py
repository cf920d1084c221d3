"""What spot interruptions cost end to end, measured by the local drill (`launcher drill`).

    python -m bench.bench_drill [--interruptions 3] [--model resnet18] [--steps 96]

One drill run holds both sides of the comparison: the interrupted run (K notices, each followed by a fresh
replacement instance that restores the dataset and the checkpoint from S3) and the same spec trained
uninterrupted as a reference. Reported: the drill's total wall time and phases, training wall time
interrupted vs uninterrupted (ratio), the wall time each interruption costs, notice → durable checkpoint,
replacement boot → first resumed step, and whether the final weights are bit-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

from launcher.drill import DEFAULT_INTERRUPTIONS, DEFAULT_MODEL, DEFAULT_STEPS, DrillOptions, run_drill


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interruptions", type=int, default=DEFAULT_INTERRUPTIONS)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    result = run_drill(DrillOptions(interruptions=args.interruptions, model=args.model, steps=args.steps))
    wall = result["training_wall_s"]
    rows = {
        "drill total (s)": result["elapsed_s"],
        "training, interrupted (s)": wall["interrupted"],
        "training, uninterrupted reference (s)": wall["uninterrupted"],
        "ratio interrupted / uninterrupted": round(wall["interrupted"] / wall["uninterrupted"], 2),
        "wall time per interruption (s)": result["interruption_overhead_s"],
        "notice → durable, median (s)": statistics.median(result["notice_to_durable_s"] or [0]),
        "replacement boot → resumed step, median (s)": statistics.median(result["resume_s"] or [0]),
        "lost steps": result["lost_steps"],
        "final weights bit-identical": result["weights_match_uninterrupted"],
    }
    print(f"# drill: {args.model}, {result['steps_total']} steps, {result['interruptions']} interruptions; "
          f"{os.cpu_count()} cores {platform.machine()}, load average {load_before:.1f} at start")
    for name, value in rows.items():
        print(f"{name:46s} {value}")
    print("phases (s): " + json.dumps(result["timings_s"], sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
