"""A moto server on loopback standing in for S3, SSM, EC2 and Auto Scaling (via AWS_ENDPOINT_URL)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from job.testing.processes import scoped_environ, stop_process

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"
            if getattr(exc, "code", None):  # an HTTP error status means the server answers
                return
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s: {last}")


class MotoServer:
    """A `moto_server` subprocess on 127.0.0.1. `env` is what clients need to reach it."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def start(self) -> "MotoServer":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **FAKE_CREDENTIALS},
        )
        wait_http(self.url + "/moto-api/")
        return self

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST"), timeout=10).read()

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def aws_env(server: MotoServer):
    """Point this process's boto3 at the server for the duration of the block."""
    return scoped_environ(server.env)
