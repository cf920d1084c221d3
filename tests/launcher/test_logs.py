"""`launcher logs [-f]` over a real sshd: tail, follow, survive a dropped connection, exit cleanly."""
from __future__ import annotations

import queue
import shlex
import subprocess
import sys
import threading
import time

import pytest

from tests.launcher.conftest import ROOT, launcher, write_config

RUN = "run-l"


def start_writer(instance) -> None:
    """A tmux session (started over SSH, like the bootstrap's) appending numbered lines to the run's log."""
    log = instance.data_dir / "runs" / RUN / "agent.log"
    log.parent.mkdir(parents=True)
    script = f"i=0; while true; do i=$((i+1)); echo \"line $i\" >> {shlex.quote(str(log))}; sleep 0.05; done"
    subprocess.run(instance.ssh_argv(f"tmux new-session -d -s spot-{RUN} {shlex.quote(script)}"), check=True,
                   timeout=30)
    deadline = time.monotonic() + 10
    while (not log.exists() or log.stat().st_size < 50) and time.monotonic() < deadline:
        time.sleep(0.05)


def session_alive(instance) -> bool:
    return instance.run_as_instance("tmux", "has-session", "-t", f"=spot-{RUN}", capture_output=True).returncode == 0


class Follower:
    """`launcher logs -f` in a subprocess; its stdout lines arrive on a queue."""

    def __init__(self, config, *args):
        import os

        self.proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", "-f", "--config", str(config), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(self.seen)} lines after {timeout}s; stderr: {self.stderr_now()}")
            try:
                line = self.lines.get(timeout=min(remaining, 1))
            except queue.Empty:
                continue
            if line.startswith("line "):
                self.seen.append(int(line.split()[1]))

    def stderr_now(self) -> str:
        return "" if self.proc.poll() is None else self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def writer(instance):
    start_writer(instance)
    yield instance


def test_logs_tail(tmp_path, home, writer):
    path = write_config(tmp_path / "run.toml", RUN, sshd=writer, bucket="unused")
    result = launcher("logs", "--config", str(path), "-n", "5", check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("line ") for line in lines)
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_follow_reconnects_after_a_dropped_connection_without_losing_lines(tmp_path, home, writer):
    path = write_config(tmp_path / "run.toml", RUN, sshd=writer, bucket="unused")
    follower = Follower(path, "-n", "3", "--reconnect-s", "30")
    try:
        follower.wait_for(20)
        dropped = writer.drop_connections()
        assert dropped >= 1
        before = len(follower.seen)
        follower.wait_for(before + 40)
        assert session_alive(writer), "the run's tmux session must survive a dropped SSH connection"
        # every line exactly once, in order, across the reconnect
        assert follower.seen == list(range(follower.seen[0], follower.seen[0] + len(follower.seen)))
        # the run ends: following stops by itself
        writer.run_as_instance("tmux", "kill-session", "-t", f"=spot-{RUN}", check=True)
        assert follower.proc.wait(timeout=30) == 0
        stderr = follower.proc.stderr.read()
        assert "dropped; reconnecting" in stderr and "reconnected after" in stderr
        assert "session ended" in stderr or "(it ended)" in stderr
    finally:
        follower.stop()


def test_follow_exits_cleanly_when_the_host_stays_away(tmp_path, home, writer):
    path = write_config(tmp_path / "run.toml", RUN, sshd=writer, bucket="unused")
    follower = Follower(path, "-n", "1", "--reconnect-s", "3")
    try:
        follower.wait_for(10)
        writer.stop()                                     # sshd gone: connections and listener
        started = time.monotonic()
        code = follower.proc.wait(timeout=40)
        took = time.monotonic() - started
        stderr = follower.proc.stderr.read()
        assert code == 1 and took < 25, (code, took, stderr)
        assert "could not reconnect within 3s" in stderr and "Training goes on in tmux session spot-run-l" in stderr
        assert "Traceback" not in stderr
        assert session_alive(writer)
    finally:
        follower.stop()
