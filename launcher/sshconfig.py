"""A `Host <run>` block in ~/.ssh/config.d/spot-resnet, included from ~/.ssh/config, so `ssh <run>` works.

Idempotent: the block between its BEGIN/END markers is replaced, everything else in both files is kept.
Paths are absolute because OpenSSH resolves a relative Include against the real home, not $HOME.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from launcher.connection import SshTarget

INCLUDE_NAME = "spot-resnet"


def _ssh_dir(home: Path | None) -> Path:
    return (home or Path.home()) / ".ssh"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)          # ssh refuses a config that others can write
    tmp.replace(path)


def host_block(alias: str, target: SshTarget) -> str:
    lines = [f"# BEGIN spot-resnet {alias}", f"Host {alias}", f"  HostName {target.host}", f"  Port {target.port}",
             f"  User {target.user}"]
    if target.key:
        lines += [f"  IdentityFile {Path(target.key).expanduser().resolve()}", "  IdentitiesOnly yes"]
    # Spot instances come and go with fresh host keys (see launcher/connection.py for the reasoning).
    lines += ["  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  LogLevel ERROR",
              "  ServerAliveInterval 15", "  ServerAliveCountMax 4", f"# END spot-resnet {alias}"]
    return "\n".join(lines) + "\n"


def write_host(alias: str, target: SshTarget, home: Path | None = None) -> Path:
    """Add or replace the block for `alias`; make sure ~/.ssh/config includes our file. Returns that file."""
    ssh_dir = _ssh_dir(home)
    included = ssh_dir / "config.d" / INCLUDE_NAME
    text = included.read_text() if included.exists() else ""
    text = remove_block(text, alias).rstrip("\n")
    text = (text + "\n\n" if text else "") + host_block(alias, target)
    _write_private(included, text)

    main = ssh_dir / "config"
    include_line = f"Include {included}"
    current = main.read_text() if main.exists() else ""
    if include_line not in current.splitlines():
        # At the top: an Include after a Host line would only apply inside that Host block.
        _write_private(main, include_line + "\n\n" + current)
    return included


def remove_host(alias: str, home: Path | None = None) -> bool:
    included = _ssh_dir(home) / "config.d" / INCLUDE_NAME
    if not included.exists():
        return False
    text = included.read_text()
    new = remove_block(text, alias)
    if new != text:
        _write_private(included, new)
    return new != text


def remove_block(text: str, alias: str) -> str:
    pattern = re.compile(rf"\n*# BEGIN spot-resnet {re.escape(alias)}\n.*?# END spot-resnet {re.escape(alias)}\n?",
                         re.S)
    return pattern.sub("\n", text).lstrip("\n")
