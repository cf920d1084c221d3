"""Run one segment of a run on this instance (what the bootstrap starts in tmux window "agent").

    python -m job.agent --bucket B --run R [--tmux-session S] [--nproc N] [--max-steps N]

Steps, each logged with its duration (RUNDIR/agent.log via tee) and safe to re-run:
1. environment   job.environment: the interpreter with job/requirements.txt; the agent re-execs inside it
2. data          prepared shards ready locally -> skip; else the S3 mirror exists -> restore it;
                 else download from the Hub -> prepare -> mirror to S3
3. lease         acquired only now: while 1-2 ran, the old instance may still have been training and
                 checkpointing (warm hand-off). Renewed in the background while training.
4. train         torchrun --standalone --nproc_per_node N -m job.train --spec --data --run-dir
                 (the trainer resumes from checkpoints/<run>/latest.json itself)
5. finish        record the outcome (finished | interrupted | failed), release the lease, close the
                 watcher window so the tmux session ends with the agent.
A "failed" state does not stop a later bootstrap from trying again; "finished" does.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from job import layout, paths

log = logging.getLogger("job.agent")

REEXEC_FLAG = "SPOT_AGENT_REEXEC"
CPU_NPROC = 2


class AgentError(RuntimeError):
    pass


class Timer:
    """Step durations, logged and kept for the records (the resume benchmark reads them)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Step:
            def __enter__(self):
                self.started = time.monotonic()
                log.info("[%s] ...", name)

            def __exit__(self, exc_type, *_):
                took = time.monotonic() - self.started
                timer.seconds[name] = round(took, 3)
                log.info("[%s] %s in %.2fs", name, "failed" if exc_type else "done", took)

        return _Step()


# --- steps ----------------------------------------------------------------------------------------------
def ensure_environment(argv: list[str]) -> str:
    from job import environment

    python = environment.ensure(paths_package_requirements())
    if os.path.realpath(python) != os.path.realpath(sys.executable) and not os.environ.get(REEXEC_FLAG):
        # Lease writes need a boto3 with conditional PUTs: run the rest under the pinned environment.
        log.info("re-running the agent under %s", python)
        os.environ[REEXEC_FLAG] = "1"
        os.execv(python, [python, "-m", "job.agent", *argv])
    return python


def paths_package_requirements() -> Path:
    return Path(__file__).with_name("requirements.txt")


def ready_marker(dataset: str) -> Path:
    """Written beside (not inside) the prepared dir once the data step completed, so a mirror never copies it."""
    return paths.prepared_dir(dataset).with_name(f".{dataset}.ready.json")


def data_step(spec, s3, python: str) -> str:
    """Make the prepared dataset complete locally; returns {"how": local|restored|prepared, bytes, seconds...}."""
    from job.s3 import get_json

    name = spec.dataset.name
    prepared = paths.prepared_dir(name)
    marker = ready_marker(name)
    if marker.exists() and (prepared / "index.json").exists():
        log.info("prepared dataset %s already complete at %s", name, prepared)
        return {"how": "local"}
    manifest = get_json(s3, spec.bucket, layout.dataset_manifest_key(name))
    if manifest is not None:
        from job.mirror import restore

        log.info("restoring %s from s3://%s/%s (%d files)", name, spec.bucket, layout.dataset_prefix(name),
                 len(manifest.get("files", {})))
        summary = restore(spec.bucket, layout.dataset_prefix(name), prepared)
        how = "restored"
    else:
        hub = paths.hub_dir(spec.dataset.repo_id)
        download = [python, "-m", "job.download", "--repo", spec.dataset.repo_id, "--revision",
                    spec.dataset.revision, "--splits", ",".join(spec.dataset.splits), "--out", str(hub)]
        if spec.dataset.hf_token_parameter:
            download += ["--token-parameter", spec.dataset.hf_token_parameter]
        run_checked(download, "download")
        prepare = [python, "-m", "job.prepare", "--source", str(hub), "--out", str(prepared),
                   "--splits", ",".join(spec.dataset.splits)]
        if spec.dataset.short_side:
            prepare += ["--short-side", str(spec.dataset.short_side)]
        run_checked(prepare, "prepare")
        from job.mirror import mirror

        summary = mirror(prepared, spec.bucket, layout.dataset_prefix(name))
        how = "prepared"
    if not (prepared / "index.json").exists():
        raise AgentError(f"{prepared}/index.json is missing after the data step ({how})")
    marker.write_text(json.dumps({"how": how, "time": time.time()}))
    return {"how": how, **{k: summary.get(k) for k in ("bytes", "files_transferred", "files_skipped", "seconds")}}


def run_checked(cmd: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise AgentError(f"{what} failed with exit code {result.returncode}; it is safe to re-run "
                         "(the bootstrap does that on the next start)")


def gpu_count() -> int:
    """GPUs via nvidia-smi, so the agent never imports torch; 0 when there is no driver."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


def nproc(spec, override: int | None) -> int:
    if override:
        return override
    value = os.environ.get("SPOT_NPROC") or spec.nproc_per_node
    if value == "auto":
        return gpu_count() or CPU_NPROC
    return int(value)


def trainer_command(python: str, n: int, spec_path: Path, data: Path, run_dir: Path, max_steps: int | None) -> list[str]:
    cmd = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "job.train", "--spec", str(spec_path), "--data", str(data), "--run-dir", str(run_dir)]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    return cmd


def notice_pending() -> dict | None:
    """A spot notice already posted (don't start a trainer that has < 2 minutes to live)."""
    from job.imds import IMDS, IMDSError

    try:
        return IMDS(timeout=0.5).spot_instance_action()
    except IMDSError:
        return None


# --- the agent ------------------------------------------------------------------------------------------------
def run_agent(bucket: str, run: str, *, python: str, tmux_session: str | None = None, nproc_override=None,
              max_steps: int | None = None, lease_ttl: float = 90.0, lease_timeout: float | None = None,
              timer: Timer | None = None) -> str:
    """Returns the final state written to the records."""
    from job import s3 as s3mod
    from job.instance import identity
    from job.lease import Lease
    from job.records import RunRecords, read_state
    from job.runspec import RunSpec
    from job.s3 import get_json
    from job.watcher import send, trainer_pids

    timer = timer or Timer()
    s3 = s3mod.client("s3")
    run_dir = paths.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / "spec.json"
    if spec_path.exists():
        spec = RunSpec.load(spec_path)
    else:
        spec = RunSpec.fetch(s3, bucket, run)
        spec.save(spec_path)
    ident = identity(spec)
    # The agent's own segment: the trainer opens one per start, and two writers never share an object.
    segment = layout.segment_id(ident["instance_id"] + "-agent")
    records = RunRecords(run_dir, run=run, segment=segment, bucket=bucket,
                         identity={k: ident[k] for k in ("instance_id", "instance_type", "az", "price_per_hour")})
    latest = get_json(s3, bucket, layout.latest_checkpoint_key(run))
    previous = (read_state(s3, bucket, run) or {}).get("state")
    if latest is None and previous in (None, "created"):
        records.state("preparing", role="agent")  # a fresh run: nobody else can be training it
    else:
        # Another instance may still be training (warm hand-off): leave state.json to the lease holder.
        records.event("agent", step="start", previous_state=previous, from_step=latest and latest.get("global_step"))

    with timer("data"):
        data = data_step(spec, s3, python)
    records.event("agent", step="data", **{**data, "seconds": timer.seconds["data"]})

    pending = notice_pending()
    if pending:
        log.warning("a spot notice is already posted (%s at %s): not starting a trainer here", pending["action"],
                    pending["time"])
        records.event("agent", step="not started", reason=f"spot notice ({pending['action']} at {pending['time']})")
        return "interrupted"

    lease = Lease(s3, bucket, run, holder=segment, ttl_s=lease_ttl)
    with timer("lease"):
        lease.acquire(wait=True, timeout=lease_timeout)
    records.event("agent", step="lease", seconds=timer.seconds["lease"])
    proc = None
    try:
        # The old holder may have finished the run while we waited for its lease.
        if (read_state(s3, bucket, run) or {}).get("state") == "finished":
            log.info("run %s finished while we waited for the lease: nothing to do", run)
            return "finished"

        def checkpoint_and_stop(reason: str) -> None:
            log.warning("%s: asking the trainer to checkpoint and stop", reason)
            send(trainer_pids(run_dir), signal.SIGUSR1)

        lease.start_renewing(on_lost=lambda why: checkpoint_and_stop(f"lease lost ({why})"))
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, lambda signum, _f: checkpoint_and_stop(f"agent got {signal.Signals(signum).name}"))
        n = nproc(spec, nproc_override)
        cmd = trainer_command(python, n, spec_path, paths.prepared_dir(spec.dataset.name), run_dir, max_steps)
        trainer_json = run_dir / "trainer.json"
        trainer_json.unlink(missing_ok=True)   # a stale one from the previous segment must not be read as ours
        log.info("training with %d process(es): %s", n, " ".join(cmd))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                          os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(cmd, env=env)
        rc = proc.wait()
        trainer = json.loads(trainer_json.read_text()) if trainer_json.exists() else {}
        final = trainer.get("state")
        # The trainer records its own transitions; the agent speaks only when it could not (a crash, a kill).
        if final not in ("finished", "interrupted", "failed") or (rc != 0 and final != "failed"):
            records.state("failed", exit_code=rc, trainer_state=final, global_step=trainer.get("global_step"))
            final = "failed"
        log.info("trainer exited %d in state %s", rc, final)
        records.event("agent", step="trainer exited", exit_code=rc, state=final, timings=timer.seconds)
        return final
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
        lease.release()
        if tmux_session:
            # The session ends with the agent's window only once the watcher window is gone too.
            subprocess.run(["tmux", "kill-window", "-t", f"={tmux_session}:watcher"], capture_output=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--tmux-session", help="close this session's watcher window when done")
    parser.add_argument("--nproc", type=int, help="trainer processes (default: spec.nproc_per_node)")
    parser.add_argument("--max-steps", type=int, help="stop after this global step (tests)")
    parser.add_argument("--lease-ttl", type=float, default=float(os.environ.get("SPOT_LEASE_TTL", 90)))
    parser.add_argument("--lease-timeout", type=float, default=None, help="give up waiting for the lease (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s agent %(levelname)s %(message)s")
    layout.check_run_name(args.run)
    timer = Timer()
    # Survives the re-exec into the environment, so the environment step's time includes a pip install.
    started = float(os.environ.setdefault("SPOT_AGENT_STARTED", repr(time.time())))
    try:
        python = ensure_environment(argv)
        timer.seconds["environment"] = round(time.time() - started, 3)
        final = run_agent(args.bucket, args.run, python=python, tmux_session=args.tmux_session,
                          nproc_override=args.nproc, max_steps=args.max_steps, lease_ttl=args.lease_ttl,
                          lease_timeout=args.lease_timeout, timer=timer)
    except Exception:
        log.exception("agent failed; run the bootstrap again to retry (every step resumes)")
        if args.tmux_session:
            subprocess.run(["tmux", "kill-window", "-t", f"={args.tmux_session}:watcher"], capture_output=True)
        return 1
    log.info("timings: %s", json.dumps(timer.seconds))
    return 0 if final in ("finished", "interrupted") else 1


if __name__ == "__main__":
    sys.exit(main())
