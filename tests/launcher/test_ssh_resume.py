"""`launcher ssh` (command and --attach through a real pty) and `launcher resume` on a fresh instance."""
from __future__ import annotations

import json
import os
import pty
import select
import shlex
import subprocess
import sys
import time

from launcher.testing.sshd import LocalSshd
from tests.launcher.conftest import ROOT, instance_env, launcher, write_config


def test_ssh_runs_a_command_with_the_instance_environment(tmp_path, home, instance):
    path = write_config(tmp_path / "run.toml", "run-s", sshd=instance, bucket="unused")
    result = launcher("ssh", "--config", str(path), "--", "printenv", "SPOT_DATA_DIR", check=True)
    assert result.stdout.strip() == str(instance.data_dir)


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_ssh_attach_opens_the_runs_tmux_session(tmp_path, home, instance):
    script = "echo ATTACHED-TO-RUN; sleep 300"
    subprocess.run(instance.ssh_argv(f"tmux new-session -d -s spot-run-s {shlex.quote(script)}"), check=True,
                   timeout=30)
    path = write_config(tmp_path / "run.toml", "run-s", sshd=instance, bucket="unused")
    pid, fd = pty.fork()
    if pid == 0:   # the child: the real CLI on a terminal
        os.chdir(ROOT)
        os.execvpe(sys.executable, [sys.executable, "-m", "launcher", "ssh", "--attach", "--config", str(path)],
                   {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm"})
    try:
        screen = _read_until(fd, b"ATTACHED-TO-RUN", 30)
        assert b"ATTACHED-TO-RUN" in screen, screen[-500:]
        for _ in range(10):                        # Ctrl-b d: detach (again if tmux was still drawing)
            os.write(fd, b"\x02d")
            screen += _read_until(fd, b"detached", 2)
            if b"detached" in screen:
                break
        assert b"detached" in screen
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    alive = instance.run_as_instance("tmux", "has-session", "-t", "=spot-run-s", capture_output=True)
    assert alive.returncode == 0


def test_resume_bootstraps_the_run_on_a_fresh_instance(tmp_path, home, aws, bucket, instance, moto_server,
                                                       monkeypatch):
    monkeypatch.setenv("TEST_HF_TOKEN", "hf_dummy")
    first = write_config(tmp_path / "first.toml", "run-r", sshd=instance, bucket=bucket)
    launcher("train", "--config", str(first), check=True)

    with LocalSshd(env=instance_env(moto_server), root=tmp_path / "replacement") as replacement:
        second = write_config(tmp_path / "second.toml", "run-r", sshd=replacement, bucket=bucket)
        assert not (replacement.data_dir / "pkg" / "run-r").exists()
        result = launcher("resume", "--config", str(second), "--json", check=True)
        out = json.loads(result.stdout)
        assert out["bootstrap"]["run"] == "run-r" and out["bootstrap"]["action"] in ("started", "running")
        pkg = replacement.data_dir / "pkg" / "run-r"
        assert (pkg / "job" / "bootstrap.py").exists()
        # the pushed code is the run's package from S3, byte for byte the one `train` stored
        assert (pkg / ".package-sha256").read_text() == (instance.data_dir / "pkg" / "run-r" / ".package-sha256").read_text()
        assert (replacement.data_dir / "runs" / "run-r" / "spec.json").exists()
        again = json.loads(launcher("resume", "--config", str(second), "--json", check=True).stdout)
        assert again["bootstrap"]["action"] in ("started", "running", "finished")
