"""The instance as the laptop sees it over SSH: its data dir, tmux sessions, trainer state, bootstrap.

Every method is a read or an idempotent action, so any command can be re-run after a dropped connection.
"""
from __future__ import annotations

import json
import shlex

from job import paths
from launcher import connection, progress
from launcher.errors import LauncherError

SESSION_PREFIX = paths.tmux_session("")      # "spot-"


class Remote:
    def __init__(self, conn):
        self.conn = conn
        self._data_dir: str | None = None

    def run(self, command: str, **kwargs):
        return connection.run(self.conn, command, **kwargs)

    def check(self, command: str, what: str) -> str:
        result = self.run(command, warn=True)
        if not result.ok:
            raise LauncherError(f"{what} failed on {self.conn.host} (exit {result.exited}): "
                                f"{(result.stderr or result.stdout).strip()[-1500:]}")
        return result.stdout

    # --------------------------------------------------------------------------------------- places
    @property
    def data_dir(self) -> str:
        if self._data_dir is None:
            out = self.check(f'printf %s "${{SPOT_DATA_DIR:-{paths.DEFAULT_DATA_DIR}}}"', "reading SPOT_DATA_DIR")
            self._data_dir = out.strip()
        return self._data_dir

    def package_dir(self, run: str) -> str:
        return f"{self.data_dir}/pkg/{run}"

    def run_dir(self, run: str) -> str:
        return f"{self.data_dir}/runs/{run}"

    @staticmethod
    def python() -> str:
        return '"${SPOT_PYTHON:-python3}"'

    # ----------------------------------------------------------------------------------------- tmux
    def tmux_sessions(self) -> list[str]:
        result = self.run("tmux list-sessions -F '#{session_name}' 2>/dev/null", warn=True)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.ok else []

    def run_sessions(self) -> list[str]:
        """Names of the runs that have a tmux session here."""
        return [s[len(SESSION_PREFIX):] for s in self.tmux_sessions() if s.startswith(SESSION_PREFIX)]

    def has_session(self, run: str) -> bool:
        return run in self.run_sessions()

    def capture_pane(self, run: str, lines: int = 200) -> str:
        session = shlex.quote(paths.tmux_session(run))
        return self.run(f"tmux capture-pane -p -J -S -{int(lines)} -t {session}", warn=True).stdout

    # -------------------------------------------------------------------------------------- trainer
    def read_json(self, path: str) -> dict | None:
        result = self.run(f"cat {shlex.quote(path)} 2>/dev/null", warn=True)
        if not result.ok or not result.stdout.strip():
            return None
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            return None                      # caught mid-write by a non-atomic writer: treat as unknown

    def trainer_state(self, run: str) -> dict | None:
        return self.read_json(f"{self.run_dir(run)}/trainer.json")

    def signal_trainer(self, run: str, signal: str = "USR1") -> list[int]:
        """Send SIGUSR1 (checkpoint and stop) to every rank with a live pid file; returns the pids hit."""
        pid_glob = f"{shlex.quote(self.run_dir(run))}/pids/rank*.pid"
        out = self.run(
            f'for f in {pid_glob}; do [ -f "$f" ] || continue; p=$(cat "$f"); '
            f'kill -0 "$p" 2>/dev/null && kill -{signal} "$p" && echo "$p"; done; true', warn=True).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    # ------------------------------------------------------------------------------------- bootstrap
    def bootstrap(self, bucket: str, run: str) -> dict:
        """`python -m job.bootstrap --bucket B --run R` from the run's package: starts or finds the session."""
        pkg = shlex.quote(self.package_dir(run))
        command = (f"cd {pkg} && PYTHONPATH={pkg}${{PYTHONPATH:+:$PYTHONPATH}} {self.python()} -m job.bootstrap "
                   f"--bucket {shlex.quote(bucket)} --run {shlex.quote(run)}")
        out = self.check(command, "the job bootstrap")
        for line in reversed(out.strip().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        raise LauncherError(f"the job bootstrap printed no JSON result line: {out[-500:]!r}")


def start_run(remote, bucket: str, run: str) -> dict:
    """Run the job bootstrap (idempotent: starts the run's tmux session or finds it) and report what it did."""
    with progress.spinner("running the job bootstrap"):
        result = remote.bootstrap(bucket, run)
    if result.get("action") == "error":
        raise LauncherError(f"the job bootstrap failed: {result.get('error')}")
    progress.done(f"bootstrap: {result.get('action')} (tmux session {paths.tmux_session(run)})")
    return result
