"""The sshd stand-in, the connection factory and the ~/.ssh/config entry, against a real OpenSSH."""
from __future__ import annotations

import subprocess
import time

import pytest

from launcher import connection, sshconfig
from launcher.connection import SshTarget
from launcher.errors import LauncherError
from tests.launcher.conftest import closed_port, launcher, write_config


def target_of(sshd) -> SshTarget:
    return SshTarget(sshd.host, sshd.port, sshd.user, sshd.key_path)


def test_sshd_gives_sessions_the_instance_environment(instance):
    result = subprocess.run(instance.ssh_argv("printenv SPOT_DATA_DIR AWS_ENDPOINT_URL SPOT_PYTHON"),
                            capture_output=True, text=True, timeout=30, check=True)
    data_dir, endpoint, python = result.stdout.split()
    assert data_dir == str(instance.data_dir) and endpoint == instance.env["AWS_ENDPOINT_URL"]
    assert python == instance.env["SPOT_PYTHON"]


def test_connect_runs_commands_with_instance_env(instance):
    conn = connection.connect(target_of(instance))
    try:
        out = connection.run(conn, "echo $SPOT_DATA_DIR").stdout.strip()
    finally:
        conn.close()
    assert out == str(instance.data_dir)
    assert connection.answers(target_of(instance))


def test_unreachable_host_fails_fast_with_a_clear_message():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(LauncherError) as err:
        connection.connect(SshTarget("127.0.0.1", port, "ubuntu", None), deadline_s=4)
    assert time.monotonic() - started < 8
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "operator_cidr" in message and "launcher status" in message


def test_cli_unreachable_host_bounded(tmp_path, home, instance):
    path = write_config(tmp_path / "run.toml", bucket="unused")
    text = path.read_text().replace(f"port = {instance.port}", "") + \
        f'[ssh]\nhost = "127.0.0.1"\nport = {closed_port()}\nkey = "{instance.key_path}"\n'
    path.write_text(text)
    result = launcher("logs", "--config", str(path), timeout=60)
    assert result.returncode == 1 and result.seconds < 25
    assert "cannot reach SSH at" in result.stderr and "Traceback" not in result.stderr


def test_ssh_config_entry_works_with_openssh_and_is_idempotent(home, instance):
    target = target_of(instance)
    main_config = home / ".ssh" / "config"
    main_config.parent.mkdir()
    main_config.write_text("Host other\n  HostName example.invalid\n")
    included = sshconfig.write_host("run-a", target)
    sshconfig.write_host("run-b", SshTarget("10.0.0.9", 22, "ubuntu", None))
    sshconfig.write_host("run-a", target)            # again: replaced, not duplicated
    text = included.read_text()
    assert text.count("Host run-a") == 1 and text.count("Host run-b") == 1
    assert main_config.read_text().count(f"Include {included}") == 1
    assert main_config.read_text().startswith("Include ") and "Host other" in main_config.read_text()
    assert oct(main_config.stat().st_mode & 0o777) == "0o600"

    result = subprocess.run(["ssh", "-F", str(main_config), "-o", "BatchMode=yes", "run-a", "echo $SPOT_DATA_DIR"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(instance.data_dir)

    assert sshconfig.remove_host("run-a")
    assert "run-a" not in included.read_text() and "Host run-b" in included.read_text()
