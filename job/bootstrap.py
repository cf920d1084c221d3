"""Join a run on this instance: idempotent, returns in seconds, prints one JSON line.

    python -m job.bootstrap --bucket B [--run R]

Steps (each logged, each safe to re-run):
1. interpreter  this one needs only stdlib + boto3; without boto3 it builds the environment and re-execs
2. run          --run, or the bucket's runs/active.json
3. spec         runs/<run>/spec.json -> RUNDIR/spec.json
4. package      packages/<run>/job.tar.gz extracted at $SPOT_DATA_DIR/pkg/<run> (replaced only when it
                changed in S3 and no session is using it)
5. state        a finished run is not restarted          -> {"action": "finished"}
6. session      tmux session spot-<run> already running  -> {"action": "running"}
7. start        tmux session with window "agent" (python -m job.agent, tee'd to RUNDIR/agent.log) and the
                watcher: a systemd service when this user can manage systemd (AWS, via root or sudo -n),
                otherwise window "watcher"                -> {"action": "started"}

A "failed" run is started again (from its latest checkpoint): that is how `launcher resume` retries it.
runs/active.json is left in place when a run finishes; its state.json says finished, which step 5 reads.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from job import layout, paths

log = logging.getLogger("job.bootstrap")

REEXEC_FLAG = "SPOT_BOOTSTRAP_REEXEC"
PACKAGE_MARKER = ".package-etag"
# What the tmux windows inherit. Passed explicitly: a tmux server started earlier (by another login) would
# otherwise hand new sessions *its* environment, not ours.
ENV_PREFIXES = ("AWS_", "SPOT_", "HF_")
ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
SYSTEMD_TEMPLATE = Path(__file__).with_name("scripts") / "spot-watcher.service"


class BootstrapError(RuntimeError):
    pass


def step(name: str):
    """Log a step's start, end and duration."""
    def wrap(fn):
        def run(*args, **kwargs):
            started = time.monotonic()
            log.info("[%s] ...", name)
            result = fn(*args, **kwargs)
            log.info("[%s] done in %.2fs", name, time.monotonic() - started)
            return result
        return run
    return wrap


@step("interpreter")
def ensure_interpreter(argv: list[str]) -> None:
    try:
        import boto3  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get(REEXEC_FLAG):
        raise BootstrapError(f"{sys.executable} still lacks boto3 after building the environment")
    from job import environment

    python = environment.ensure()
    log.info("re-running the bootstrap under %s", python)
    os.environ[REEXEC_FLAG] = "1"
    os.execv(python, [python, "-m", "job.bootstrap", *argv])


@step("run")
def find_run(s3, bucket: str, run: str | None) -> tuple[str, str]:
    """(run, package key)."""
    from job.s3 import get_json

    if run:
        return layout.check_run_name(run), layout.package_key(run)
    active = get_json(s3, bucket, layout.active_run_key())
    if not active or not active.get("run"):
        raise BootstrapError(f"no active run in s3://{bucket}/{layout.active_run_key()}: "
                             "start one with `launcher train`, or pass --run")
    return layout.check_run_name(active["run"]), active.get("package_key") or layout.package_key(active["run"])


@step("spec")
def fetch_spec(s3, bucket: str, run: str, run_dir: Path):
    from job.runspec import RunSpec

    try:
        spec = RunSpec.fetch(s3, bucket, run)
    except s3.exceptions.NoSuchKey as exc:
        raise BootstrapError(f"s3://{bucket}/{layout.spec_key(run)} is missing: "
                             f"`launcher train` stores it; is --run {run} right?") from exc
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "spec.json.tmp"
    tmp.write_text(spec.to_json())
    os.replace(tmp, run_dir / "spec.json")
    return spec


@step("package")
def ensure_package(s3, bucket: str, key: str, pkg_dir: Path, *, session_running: bool) -> str:
    """Extract the job package at pkg_dir; returns what happened."""
    from botocore.exceptions import ClientError

    try:
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    except ClientError as exc:
        if (pkg_dir / "job" / "__init__.py").exists():
            log.warning("s3://%s/%s not readable (%s); keeping the extracted package", bucket, key, exc)
            return "kept"
        raise BootstrapError(f"job package s3://{bucket}/{key} is missing: push it with `launcher train`") from exc
    marker = pkg_dir / PACKAGE_MARKER
    if (pkg_dir / "job" / "__init__.py").exists():
        if not marker.exists():  # extracted by the user data: same object, just unmarked
            marker.write_text(etag)
            return "present"
        if marker.read_text().strip() == etag:
            return "present"
        if session_running:
            log.warning("the package in S3 changed, but a session is using %s: not replacing it now", pkg_dir)
            return "kept"
    pkg_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{pkg_dir.name}.", dir=pkg_dir.parent))
    try:
        archive = partial / "job.tar.gz"
        s3.download_file(bucket, key, str(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        archive.unlink()
        if not (partial / "job" / "__init__.py").exists():
            raise BootstrapError(f"s3://{bucket}/{key} has no job/__init__.py: not a job package")
        (partial / PACKAGE_MARKER).write_text(etag)
        # Swap in whole, so an interrupted bootstrap never leaves a half package in place.
        old = None
        if pkg_dir.exists():
            old = pkg_dir.with_name(f".{pkg_dir.name}.old-{int(time.time())}")
            os.replace(pkg_dir, old)
        os.replace(partial, pkg_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return "extracted"


# --- tmux -------------------------------------------------------------------------------------------------
def tmux(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not shutil.which("tmux"):
        raise BootstrapError("tmux is not installed: `sudo apt-get install -y tmux`")
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=check)


def session_windows(session: str) -> list[str] | None:
    """Window names of the session, or None when it does not exist."""
    found = tmux("list-windows", "-t", f"={session}", "-F", "#{window_name}", check=False)
    if found.returncode != 0:
        return None
    return found.stdout.split()


def session_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(REEXEC_FLAG, None)
    return env


def window_command(pkg_dir: Path, module_args: list[str], log_path: Path) -> str:
    python = shlex.quote(sys.executable)
    inner = (f"set -o pipefail; cd {shlex.quote(str(pkg_dir))} && "
             f"PYTHONPATH={shlex.quote(str(pkg_dir))} {python} -m {shlex.join(module_args)} 2>&1 "
             f"| tee -a {shlex.quote(str(log_path))}")
    return f"bash -c {shlex.quote(inner)}"


def watcher_args(bucket: str, run: str, run_dir: Path) -> list[str]:
    return ["job.watcher", "--run-dir", str(run_dir), "--bucket", bucket, "--run", run]


def can_use_systemd() -> list[str] | None:
    """The command prefix that manages systemd units here (["sudo", "-n"] or []), or None."""
    if os.environ.get("SPOT_WATCHER_SYSTEMD", "auto") == "0":
        return None
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def render_watcher_unit(*, bucket: str, run: str, run_dir: Path, pkg_dir: Path, python: str, user: str,
                        env: dict[str, str]) -> str:
    lines = "\n".join(f"Environment={shlex.quote(f'{k}={v}')}" for k, v in sorted(env.items())
                      if k.startswith(ENV_PREFIXES))
    values = {"@@RUN@@": run, "@@BUCKET@@": bucket, "@@RUN_DIR@@": str(run_dir), "@@PACKAGE_DIR@@": str(pkg_dir),
              "@@PYTHON@@": python, "@@USER@@": user, "@@ENVIRONMENT@@": lines}
    text = SYSTEMD_TEMPLATE.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


@step("watcher service")
def install_watcher_service(prefix: list[str], unit_text: str, run: str) -> str:
    name = f"spot-watcher-{run}.service"
    path = Path("/etc/systemd/system") / name
    if path.exists() and path.read_text() == unit_text:
        subprocess.run([*prefix, "systemctl", "start", name], check=True)
        return name
    subprocess.run([*prefix, "tee", str(path)], input=unit_text, text=True, check=True, capture_output=True)
    subprocess.run([*prefix, "systemctl", "daemon-reload"], check=True)
    subprocess.run([*prefix, "systemctl", "enable", name], check=True, capture_output=True)
    subprocess.run([*prefix, "systemctl", "restart", name], check=True)
    return name


@step("start")
def start_session(session: str, *, bucket: str, run: str, run_dir: Path, pkg_dir: Path) -> dict:
    env = session_env()
    env_flags = [flag for k, v in sorted(env.items()) for flag in ("-e", f"{k}={v}")]
    agent = ["job.agent", "--bucket", bucket, "--run", run, "--tmux-session", session]
    created = tmux("new-session", "-d", "-s", session, "-n", "agent", *env_flags,
                   window_command(pkg_dir, agent, run_dir / "agent.log"), check=False)
    if created.returncode != 0:
        if "duplicate session" in created.stderr:  # a concurrent bootstrap won the race: fine
            return {"action": "running"}
        raise BootstrapError(f"tmux new-session failed: {created.stderr.strip()}")
    prefix = can_use_systemd()
    if prefix is not None:
        unit = render_watcher_unit(bucket=bucket, run=run, run_dir=run_dir, pkg_dir=pkg_dir, python=sys.executable,
                                   user=getpass.getuser(), env=env)
        return {"action": "started", "watcher": "systemd:" + install_watcher_service(prefix, unit, run)}
    tmux("new-window", "-d", "-t", f"={session}:", "-n", "watcher", *env_flags,
         window_command(pkg_dir, watcher_args(bucket, run, run_dir), run_dir / "watcher.log"))
    return {"action": "started", "watcher": "tmux"}


def bootstrap(bucket: str, run: str | None = None) -> dict:
    from job import s3 as s3mod
    from job.records import read_state

    s3 = s3mod.client("s3")
    run, package_key = find_run(s3, bucket, run)
    run_dir, pkg_dir, session = paths.run_dir(run), paths.package_dir(run), paths.tmux_session(run)
    fetch_spec(s3, bucket, run, run_dir)
    windows = session_windows(session)
    ensure_package(s3, bucket, package_key, pkg_dir, session_running=bool(windows and "agent" in windows))
    state = read_state(s3, bucket, run) or {}
    if state.get("state") == "finished":
        log.info("run %s finished at %s: not restarting it", run,
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.get("time", 0))))
        return {"run": run, "action": "finished"}
    if windows is not None:
        if "agent" in windows:
            log.info("tmux session %s is already running the agent", session)
            return {"run": run, "action": "running", "session": session}
        log.warning("tmux session %s has no agent window (it died): replacing the session", session)
        tmux("kill-session", "-t", f"={session}", check=False)
    result = start_session(session, bucket=bucket, run=run, run_dir=run_dir, pkg_dir=pkg_dir)
    if result["action"] == "started":
        log.info("started tmux session %s (attach: tmux attach -t %s); log: %s", session, session,
                 run_dir / "agent.log")
    return {"run": run, "session": session, **result}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", default=os.environ.get("SPOT_BUCKET"),
                        help="the stack's bucket (default: $SPOT_BUCKET)")
    parser.add_argument("--run", help="run name (default: the bucket's active run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s bootstrap %(levelname)s %(message)s")
    if not args.bucket:
        parser.error("--bucket is required (or set SPOT_BUCKET): the stack output 'Bucket'")
    try:
        ensure_interpreter(argv)
        result = bootstrap(args.bucket, args.run)
    except (BootstrapError, ValueError) as exc:
        log.error("%s", exc)
        print(json.dumps({"run": args.run, "action": "error", "error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
