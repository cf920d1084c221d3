"""`launcher logs [-f]`: the run's log on the instance, or its tmux pane when there is no log file yet.

`-f` streams by byte offset: after a dropped SSH connection it reconnects (bounded) and goes on exactly
where it stopped, so no line is lost or repeated. Training never depends on this stream: it runs in tmux.
"""
from __future__ import annotations

import shlex
import socket
import sys
import time

from job import paths
from launcher import connection, progress
from launcher.config import RunConfig
from launcher.deployment import Deployment
from launcher.errors import LauncherError

# agent.log first: the bootstrap tees the whole agent (download, prepare, torchrun) into it.
LOG_NAMES = ("agent.log", "train.log")


def log_path(remote, run: str) -> str | None:
    candidates = " ".join(shlex.quote(f"{remote.run_dir(run)}/{name}") for name in LOG_NAMES)
    out = remote.run(f"for f in {candidates}; do [ -f \"$f\" ] && {{ echo \"$f\"; break; }}; done; true").stdout
    return out.strip() or None


def session_pid(remote, run: str) -> int | None:
    """PID of the session's first pane: `tail --pid` stops following when the run's session ends."""
    session = shlex.quote("=" + paths.tmux_session(run))
    out = remote.run(f"tmux list-panes -s -t {session} -F '#{{pane_pid}}' 2>/dev/null | head -n 1", warn=True).stdout
    return int(out.strip()) if out.strip().isdigit() else None


def tail(config: RunConfig, lines: int = 100) -> str:
    remote = Deployment(config).connect()
    try:
        path = log_path(remote, config.name)
        if path:
            return remote.run(f"tail -n {int(lines)} {shlex.quote(path)}").stdout
        if remote.has_session(config.name):
            return remote.capture_pane(config.name, lines)
        raise LauncherError(f"run {config.name} has no log on {remote.conn.host} and no tmux session: start it "
                            "with `launcher train` (or `launcher resume`)")
    finally:
        remote.conn.close()


class _Dropped(Exception):
    pass


# A connection lost in the middle of one of the short commands surfaces as one of these instead.
_CONNECTION_ERRORS = (_Dropped, EOFError, ConnectionError, socket.error)


class _CountingWriter:
    """Counts what reached the user, so a reconnect resumes at exactly that byte."""

    def __init__(self, out):
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()
        self.count += len(data)


def _stream(remote, command: str, out: _CountingWriter) -> int:
    """Run `command`, copying its stdout to `out`; returns its exit status. _Dropped if the link died."""
    transport = remote.conn.transport
    channel = transport.open_session()
    channel.settimeout(1.0)
    channel.exec_command(connection.remote(command))
    while True:
        try:
            data = channel.recv(65536)
        except socket.timeout:
            if not transport.is_active():
                raise _Dropped() from None
            continue
        except (OSError, EOFError) as exc:
            raise _Dropped() from exc
        if not data:
            break
        out.write(data)
    if not channel.exit_status_ready():
        raise _Dropped()                   # closed without an exit status: the connection went away
    return channel.recv_exit_status()


def follow(config: RunConfig, *, lines: int = 100, out=None, reconnect_window_s: float = 30.0) -> dict:
    """Stream the log until the run's tmux session ends. Returns {"bytes", "reconnects"}."""
    import paramiko

    connection_errors = _CONNECTION_ERRORS + (paramiko.SSHException,)
    out = out or sys.stdout.buffer
    deployment = Deployment(config)
    offset: int | None = None               # bytes of the log file already shown
    reconnects = 0
    dropped_at: float | None = None
    while True:
        try:
            remaining = reconnect_window_s - (time.monotonic() - dropped_at) if dropped_at else 15.0
            remote = deployment.connect(deadline_s=max(1.0, remaining))
        except LauncherError as exc:
            if dropped_at is None:
                raise
            raise LauncherError(
                f"lost the SSH connection and could not reconnect within {reconnect_window_s:.0f}s ({exc}). "
                f"Training goes on in tmux session spot-{config.name}; run `launcher logs -f` again later.") from None
        try:
            if dropped_at is not None:
                reconnects += 1
                progress.warn(f"reconnected after {time.monotonic() - dropped_at:.1f}s; continuing the log")
                dropped_at = None
            path = log_path(remote, config.name)
            pid = session_pid(remote, config.name)
            if path is None:
                if pid is None:
                    raise LauncherError(f"run {config.name} has no log and no tmux session on {remote.conn.host}: "
                                        "start it with `launcher train` or `launcher resume`")
                out.write(remote.capture_pane(config.name, lines).encode())
                out.flush()
                return {"bytes": 0, "reconnects": reconnects}
            q = shlex.quote(path)
            if offset is None:
                # the size and the last lines up to it in one command, so following starts right after them
                first = remote.run(f"s=$(stat -c %s {q}); echo \"$s\"; head -c \"$s\" {q} | tail -n {int(lines)}")
                size, _, text = first.stdout.partition("\n")
                out.write(text.encode())
                out.flush()
                offset = int(size)
            counter = _CountingWriter(out)
            try:
                if pid is None:
                    # the run is not in tmux any more: show what was added and stop
                    _stream(remote, f"tail -c +{offset + 1} {q}", counter)
                    progress.info(f"run {config.name} has no tmux session (it ended): the log is complete")
                    return {"bytes": offset + counter.count, "reconnects": reconnects}
                _stream(remote, f"tail -c +{offset + 1} -F --pid={pid} {q} 2>/dev/null", counter)
            finally:
                offset += counter.count
            # tail stops when the session's pane process exits, or when our SSH session was cut: tell which
            if not remote.conn.transport.is_active():
                raise _Dropped()
            for _ in range(20):                  # a session being killed takes a moment to disappear
                if session_pid(remote, config.name) is None:
                    progress.info(f"run {config.name}'s tmux session ended")
                    return {"bytes": offset, "reconnects": reconnects}
                time.sleep(0.25)
            continue                             # the session lives on: follow again from `offset`
        except connection_errors:
            dropped_at = time.monotonic()
            progress.warn(f"SSH connection to {remote.conn.host} dropped; reconnecting (training goes on in tmux)")
        finally:
            remote.conn.close()
