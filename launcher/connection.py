"""Fabric connections to an instance: bounded timeouts, keepalives, a few retries, one clear error.

Host keys are not pinned: spot instances are replaced all the time and a new instance may reuse an old
address with a new host key. Access is guarded by the key pair and by the security group admitting only
the operator's address (the same choice SkyPilot makes).
"""
from __future__ import annotations

import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import LauncherError

CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_S = 10
# Sourced by every remote command: on AWS user data writes the instance's environment there; locally the
# file is absent and sshd's SetEnv gives the same variables.
PROFILE = "/etc/profile.d/spot-resnet.sh"


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int = 22
    user: str = "ubuntu"
    key: Path | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class UnreachableError(LauncherError):
    pass


def _unreachable(target: SshTarget, seconds: float, cause: BaseException) -> UnreachableError:
    reason = str(cause) or type(cause).__name__
    return UnreachableError(
        f"cannot reach SSH at {target} within {seconds:.0f}s ({reason}). Check that the instance is running "
        f"(`launcher status`), that port {target.port} on {target.host} admits your address (operator_cidr in the "
        f"run config; your IP may have changed: re-run `launcher up`), and that the key "
        f"{target.key or '(default keys)'} opens it (ssh.key in the run config).")


def connect(target: SshTarget, *, deadline_s: float = 15.0, attempts: int = 4):
    """An open fabric.Connection, or UnreachableError after at most ~`deadline_s` seconds."""
    import paramiko
    from fabric import Config, Connection

    config = Config(lazy=True, overrides={"load_ssh_configs": False, "run": {"in_stream": False}})
    connect_kwargs = {"look_for_keys": target.key is None, "allow_agent": target.key is None,
                      "banner_timeout": CONNECT_TIMEOUT_S, "auth_timeout": CONNECT_TIMEOUT_S}
    if target.key is not None:
        connect_kwargs["key_filename"] = str(target.key)
    start = time.monotonic()
    last: BaseException | None = None
    for attempt in range(attempts):
        remaining = deadline_s - (time.monotonic() - start)
        if remaining <= 0:
            break
        conn = Connection(target.host, user=target.user, port=target.port, config=config,
                          connect_timeout=min(CONNECT_TIMEOUT_S, remaining), connect_kwargs=connect_kwargs)
        try:
            conn.open()
            conn.transport.set_keepalive(KEEPALIVE_S)
            return conn
        except paramiko.AuthenticationException as exc:
            conn.close()
            raise LauncherError(f"SSH at {target} refused the key {target.key or '(default keys)'}: {exc}. "
                                "Set ssh.key in the run config to the private key of the instance's key pair.") from None
        except (OSError, socket.timeout, paramiko.SSHException, EOFError) as exc:
            conn.close()
            last = exc
            pause = min(2.0 ** attempt, deadline_s - (time.monotonic() - start))
            if pause > 0 and attempt < attempts - 1:
                time.sleep(pause)
    raise _unreachable(target, time.monotonic() - start, last or TimeoutError("no attempt left"))


def answers(target: SshTarget) -> bool:
    """One quick probe: does SSH at `target` accept our key and run a command?"""
    try:
        conn = connect(target, deadline_s=CONNECT_TIMEOUT_S + 1, attempts=1)
    except LauncherError:
        return False
    try:
        return run(conn, "true", warn=True).ok
    finally:
        conn.close()


def remote(command: str) -> str:
    """`command` wrapped so it sees the instance environment whatever shell sshd starts."""
    return f"bash -c {shlex.quote(f'[ -r {PROFILE} ] && . {PROFILE}; {command}')}"


def run(conn, command: str, *, hide: bool = True, warn: bool = False, **kwargs):
    return conn.run(remote(command), hide=hide, warn=warn, in_stream=False, **kwargs)
