"""Launcher test fixtures: a real sshd "instance", a fake `cdk` on PATH, a local checkip endpoint, and a
helper that runs the real `launcher` CLI in a subprocess against them and the moto server."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.testing.sshd import LocalSshd

ROOT = Path(__file__).resolve().parents[2]
FAKE_CDK = Path(__file__).with_name("fake_cdk.py")
CHECKIP_ADDRESS = "198.51.100.23"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private $HOME (ssh config, scratch files) for this process and the CLI subprocesses."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.setenv("SPOT_RESNET_HOME", str(path / ".cache" / "spot-resnet"))
    return path


def instance_env(moto_server) -> dict[str, str]:
    """What a test instance's sessions see: the moto server; the Hub and IMDS at closed loopback ports, so
    nothing started there (the real bootstrap and agent) can reach the internet."""
    return {**moto_server.env, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "PYTHONPATH": str(ROOT), "SPOT_WATCHER_SYSTEMD": "0"}


@pytest.fixture
def instance(moto_server, tmp_path):
    """A real sshd with its own data dir and tmux server; sessions see the moto server, like an instance."""
    with LocalSshd(env=instance_env(moto_server), root=tmp_path / "instance") as sshd:
        yield sshd


@pytest.fixture
def fake_cdk(tmp_path, monkeypatch):
    """`cdk` first on PATH: records its calls in the returned log file and plays the stack on moto."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "cdk"
    script.write_text(f"#!{sys.executable}\n" + FAKE_CDK.read_text())
    script.chmod(0o755)
    log = tmp_path / "cdk-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CDK_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return log


def deploy_with_fake_cdk(stack: str, tmp_path) -> dict:
    """Play `cdk deploy` on the moto server (bucket, spot group with one instance, stack outputs)."""
    outputs = tmp_path / "outputs.json"
    log = tmp_path / "seed-cdk.jsonl"
    subprocess.run([sys.executable, str(FAKE_CDK), "deploy", "-c", f"stack_name={stack}", "-c", "nodes=1",
                    "-c", "instance_types=g5.xlarge", "--outputs-file", str(outputs)], check=True,
                   env={**os.environ, "FAKE_CDK_LOG": str(log)}, capture_output=True)
    return json.loads(outputs.read_text())[stack]


def cdk_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def checkip(monkeypatch):
    """A loopback stand-in for https://checkip.amazonaws.com (answers with a documentation address)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (CHECKIP_ADDRESS + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("LAUNCHER_CHECKIP_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    yield CHECKIP_ADDRESS
    server.shutdown()
    server.server_close()


def write_config(path: Path, name: str = "run-a", *, sshd: LocalSshd | None = None, bucket: str | None = None,
                 extra: str = "", train: str = 'preset = "fast"\nmodel = "resnet18"\nepochs = 4\nglobal_batch = 32\n',
                 token_env: str = "TEST_HF_TOKEN") -> Path:
    lines = [f'name = "{name}"', 'region = "us-east-1"', 'instance_types = ["g5.xlarge", "g4dn.xlarge"]',
             "nodes = 1", extra, "[dataset]", 'repo_id = "ILSVRC/imagenet-1k"', 'name = "photos"',
             f'hf_token_env = "{token_env}"', "[train]", train]
    if bucket:
        lines += ["[bucket]", f'name = "{bucket}"']
    if sshd:
        lines += ["[ssh]", f'host = "{sshd.host}"', f"port = {sshd.port}", f'user = "{sshd.user}"',
                  f'key = "{sshd.key_path}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def launcher(*args: str, timeout: float = 120, env: dict | None = None, check: bool = False,
             **kwargs) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (`python -m launcher ...`), with this process's environment."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True,
                            timeout=timeout, env=full_env, cwd=kwargs.pop("cwd", ROOT), **kwargs)
    result.seconds = time.monotonic() - started
    if check and result.returncode != 0:
        raise AssertionError(f"launcher {' '.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result
