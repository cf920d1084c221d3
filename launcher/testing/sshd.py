"""A real OpenSSH sshd on a free loopback port, standing in for one instance (tests and the local drill).

Each server gets its own directory with a host key, a client key, `authorized_keys` and an `sshd_config`
whose `SetEnv` lines give every session this "instance"'s environment (SPOT_DATA_DIR, AWS_ENDPOINT_URL,
AWS_EC2_METADATA_SERVICE_ENDPOINT, HF_ENDPOINT, ...): exactly what user data sets on AWS. It runs as the
current user, so it needs no privileges beyond what that user has (as root it also permits root login).
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from job.testing.processes import stop_process

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setenv_line(env: dict[str, str]) -> str:
    """One `SetEnv` line for all variables: sshd honours only the first SetEnv directive it reads."""
    words = []
    for name, value in sorted(env.items()):
        # sshd_config tokenises with argv_split: double quotes group a word; a word may not hold a quote.
        if '"' in value or "\n" in value:
            raise ValueError(f"environment value for {name} cannot contain a double quote or newline")
        words.append(f'"{name}={value}"')
    return "SetEnv " + " ".join(words)


def default_instance_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a local instance sees: its data dir, this interpreter, the current PATH/PYTHONPATH, and `extra`."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if venv_bin not in path.split(os.pathsep):
        path = venv_bin + os.pathsep + path
    env = {
        "SPOT_DATA_DIR": str(data_dir),
        "SPOT_PYTHON": sys.executable,
        "PATH": path,
        "LANG": "C.UTF-8",
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra or {})
    return env


class LocalSshd:
    """`with LocalSshd(env={...}) as sshd:` → `sshd.host`, `.port`, `.user`, `.key_path`, `.env`, `.data_dir`.

    `env` is merged over `default_instance_env` (pass AWS_ENDPOINT_URL, credentials, HF_ENDPOINT, ...).
    A `TMUX_TMPDIR` inside the server's directory keeps its tmux server apart from any other on the machine.
    """

    def __init__(self, env: dict[str, str] | None = None, *, root: Path | None = None, data_dir: Path | None = None,
                 port: int | None = None):
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="spot-sshd-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir or self.root / "data")
        self.tmux_dir = self.root / "tmux"
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self.user = getpass.getuser()
        self.key_path = self.root / "client_ed25519"
        self.host_key_path = self.root / "host_ed25519"
        self.config_path = self.root / "sshd_config"
        self.pid_path = self.root / "sshd.pid"
        self.log_path = self.root / "sshd.log"
        self.env = {**default_instance_env(self.data_dir), "TMUX_TMPDIR": str(self.tmux_dir), **(env or {})}
        self.proc: subprocess.Popen | None = None

    # set-up
    def _keygen(self, path: Path) -> None:
        if not path.exists():
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)

    def _write_config(self) -> None:
        authorized = self.root / "authorized_keys"
        authorized.write_text(Path(str(self.key_path) + ".pub").read_text())
        authorized.chmod(0o600)
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {authorized}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "StrictModes no",
            # The machine running tests is often root; a real instance logs in as ubuntu, same thing here.
            "PermitRootLogin yes",
            "AllowTcpForwarding no",
            "Subsystem sftp internal-sftp",   # Fabric's put() uses SFTP, as on a stock Ubuntu instance
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel INFO",
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
            "MaxStartups 50:30:100",
            _setenv_line(self.env),
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> "LocalSshd":
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} not found: install openssh-server (apt-get install openssh-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmux_dir.mkdir(parents=True, exist_ok=True)
        self.tmux_dir.chmod(0o700)
        self._keygen(self.host_key_path)
        self._keygen(self.key_path)
        self._write_config()
        # privilege separation needs this directory when sshd runs as root
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(self.config_path)], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"), start_new_session=True,
        )
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"sshd on {self.host}:{self.port} did not answer within {timeout:.0f}s")

    # control
    def connection_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener)."""
        if not self.proc:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def drop_connections(self) -> int:
        """Kill every open SSH connection (the listener keeps running): what a network blip looks like."""
        pids = self.connection_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def run_as_instance(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run a command locally with this instance's environment (for inspecting its tmux, files, ...)."""
        return subprocess.run(list(args), env={**os.environ, **self.env}, **kwargs)

    def kill_tmux(self) -> None:
        self.run_as_instance("tmux", "kill-server", capture_output=True)

    def ssh_argv(self, *command: str) -> list[str]:
        """The OpenSSH client command line that reaches this server."""
        return ["ssh", "-i", str(self.key_path), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                f"{self.user}@{self.host}", *command]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.drop_connections()
            stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        """Stop sshd and this instance's tmux server; remove the directory if this object made it."""
        self.stop()
        self.kill_tmux()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalSshd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
