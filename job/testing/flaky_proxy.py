"""A TCP proxy on 127.0.0.1 in front of the moto server that cuts chosen S3 requests off mid-upload.

Real failures, not mocks: the client (boto3 / TransferManager) sees its connection reset while it is
sending the body of a matching request, exactly as on a flaky network, and its own retry logic has to
cope. Requests are matched on "METHOD /path?query" with a regular expression; the first `drop` matching
requests are cut, everything else is forwarded untouched (one request per connection: the proxy asks
both ends for `Connection: close`, so it can see every request line).

    python -m job.testing.flaky_proxy --upstream http://127.0.0.1:5000 --drop 3 --match 'PUT .*\\.pt'
"""
from __future__ import annotations

import argparse
import re
import socket
import struct
import threading
import time
from urllib.parse import urlparse

UPLOADS_OF_CHECKPOINTS = r"^PUT \S*\.pt(\?|\s|$)"
_HEAD_END = b"\r\n\r\n"


class FlakyProxy:
    def __init__(self, upstream_url: str, *, drop: int = 0, match: str = UPLOADS_OF_CHECKPOINTS,
                 body_bytes_before_drop: int = 64 * 1024):
        parsed = urlparse(upstream_url)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.body_bytes_before_drop = body_bytes_before_drop
        self._lock = threading.Lock()
        self._drop, self._match = drop, re.compile(match)
        self.dropped: list[str] = []      # request lines that were cut off
        self.forwarded: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopping = False
        self._thread: threading.Thread | None = None

    def fail(self, drop: int, match: str | None = None) -> None:
        """Cut the next `drop` matching requests (a large number: S3 is down for those requests)."""
        with self._lock:
            self._drop = drop
            if match is not None:
                self._match = re.compile(match)

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> "FlakyProxy":
        self._thread = threading.Thread(target=self._accept_loop, name="flaky-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)   # wakes the blocked accept() (close alone does not)
        except OSError:
            pass
        self._server.close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FlakyProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    # --- one connection = one request -------------------------------------------------------------------
    def _handle(self, client: socket.socket) -> None:
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            if self._should_drop(request_line):
                self._cut(client, head, rest)
                with self._lock:
                    self.dropped.append(request_line)
                return
            with self._lock:
                self.forwarded.append(request_line)
            self._forward(client, _connection_close(head), rest)
        except OSError:
            pass  # the client or upstream went away: nothing to clean up beyond the sockets
        finally:
            client.close()

    def _should_drop(self, request_line: str) -> bool:
        with self._lock:
            if self._drop > 0 and self._match.search(request_line):
                self._drop -= 1
                return True
        return False

    def _cut(self, client: socket.socket, head: bytes, rest: bytes) -> None:
        """Accept part of the body (answering 100-continue like S3 would), then reset the connection."""
        if b"100-continue" in head.lower():
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        received = len(rest)
        client.settimeout(2)
        try:
            while received < self.body_bytes_before_drop:
                chunk = client.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
        except socket.timeout:
            pass
        # SO_LINGER 0: close() sends RST, the way a dropped connection looks to the client.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _forward(self, client: socket.socket, head: bytes, rest: bytes) -> None:
        upstream = socket.create_connection(self.upstream, timeout=60)
        try:
            upstream.sendall(head + rest)
            pump = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
            pump.start()
            _pipe(upstream, client)          # the response; upstream closes after it (Connection: close)
            client.shutdown(socket.SHUT_RDWR)
            pump.join(timeout=5)
        finally:
            upstream.close()


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while _HEAD_END not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 1 << 20:
            raise OSError("request head too large")
    head, rest = data.split(_HEAD_END, 1)
    return head + _HEAD_END, rest


def _connection_close(head: bytes) -> bytes:
    lines = head[: -len(_HEAD_END)].split(b"\r\n")
    kept = [line for line in lines[1:] if not line.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + _HEAD_END


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(1 << 16):
            dst.sendall(chunk)
    except OSError:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. the moto server URL")
    parser.add_argument("--drop", type=int, default=1, help="how many matching requests to cut off")
    parser.add_argument("--match", default=UPLOADS_OF_CHECKPOINTS, help="regex on 'METHOD /path?query'")
    args = parser.parse_args(argv)
    with FlakyProxy(args.upstream, drop=args.drop, match=args.match) as proxy:
        print(proxy.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
