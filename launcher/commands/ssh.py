"""`launcher ssh [--attach] [-- CMD]`: OpenSSH to the instance (a shell, the run's tmux session, or a command)."""
from __future__ import annotations

import os
import shlex

from job import paths
from launcher.config import RunConfig
from launcher.connection import remote
from launcher.deployment import Deployment


def ssh_argv(config: RunConfig, *, attach: bool = False, command: tuple[str, ...] = ()) -> list[str]:
    target = Deployment(config).ssh_target()
    # Host keys are not pinned: see launcher/connection.py.
    argv = ["ssh", "-p", str(target.port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=15", "-o", "ConnectTimeout=10"]
    if target.key:
        argv += ["-i", str(target.key), "-o", "IdentitiesOnly=yes"]
    if attach:
        session = shlex.quote("=" + paths.tmux_session(config.name))
        argv += ["-t", f"{target.user}@{target.host}",
                 remote(f"tmux attach-session -t {session} || {{ echo 'no tmux session {paths.tmux_session(config.name)}: "
                        f"start the run with launcher train or launcher resume' >&2; exit 1; }}")]
    elif command:
        argv += [f"{target.user}@{target.host}", remote(shlex.join(command))]
    else:
        argv += [f"{target.user}@{target.host}"]
    return argv


def exec_ssh(argv: list[str]) -> None:
    os.execvp(argv[0], argv)
