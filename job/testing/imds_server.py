"""A local EC2 instance metadata service (IMDSv2 only) on 127.0.0.1, one per local "instance".

It answers like the real service and aws/amazon-ec2-metadata-mock: `PUT /latest/api/token` issues a
token that every other request must carry (401 without, or once it expired); identity paths; 404 on
`spot/instance-action` and `events/recommendations/rebalance` until a notice is scheduled, then
`{"action": "terminate", "time": "..."}` / `{"noticeTime": "..."}`. A control API drives it:

    POST /_control/notice     {"in_s": 0, "action": "terminate"}      spot interruption notice
    POST /_control/rebalance  {"in_s": 0}                             rebalance recommendation
    POST /_control/faults     {"5xx": N, "timeouts": N, "timeout_s": 3} the next N metadata requests fail
                              {"truncated": N} 200 with a body cut short (the connection drops mid-body)
                              {"garbage": N}   200 with a JSON body that is not an object
    POST /_control/expire-tokens                                      every issued token becomes invalid
    GET  /_control/stats                                              request counts, notice times

    python -m job.testing.imds_server --port P --instance-id i-0abc --instance-type g5.xlarge --az us-east-1a
"""
from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from job.imds import (IDENTITY_DOCUMENT_PATH, REBALANCE_PATH, SPOT_ACTION_PATH, TOKEN_HEADER, TOKEN_PATH,
                      TOKEN_TTL_HEADER, format_time)

NOTICE_LEAD_S = 120  # AWS gives two minutes between the notice and the action


class _State:
    def __init__(self, instance_id: str, instance_type: str, az: str, max_token_ttl_s: int):
        self.instance_id, self.instance_type, self.az = instance_id, instance_type, az
        self.max_token_ttl_s = max_token_ttl_s
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}          # token -> monotonic expiry
        self.notice: dict | None = None             # {"visible_at": epoch, "action", "time"}
        self.rebalance: dict | None = None          # {"visible_at": epoch, "noticeTime"}
        self.faults = {"5xx": 0, "timeouts": 0, "timeout_s": 3.0, "truncated": 0, "garbage": 0}
        self.counts: Counter = Counter()

    def identity_document(self) -> dict:
        return {"instanceId": self.instance_id, "instanceType": self.instance_type,
                "availabilityZone": self.az, "region": self.az[:-1], "architecture": "x86_64",
                "imageId": "ami-00000000000000000", "privateIp": "127.0.0.1", "accountId": "123456789012",
                "pendingTime": format_time(time.time()), "version": "2017-09-30"}

    def meta(self, path: str) -> str | dict | None:
        now = time.time()
        table = {
            "/latest/meta-data/instance-id": self.instance_id,
            "/latest/meta-data/instance-type": self.instance_type,
            "/latest/meta-data/placement/availability-zone": self.az,
            "/latest/meta-data/placement/region": self.az[:-1],
            "/latest/meta-data/instance-life-cycle": "spot",
            IDENTITY_DOCUMENT_PATH: self.identity_document(),
        }
        if path in table:
            return table[path]
        if path == SPOT_ACTION_PATH and self.notice and now >= self.notice["visible_at"]:
            return {"action": self.notice["action"], "time": self.notice["time"]}
        if path == REBALANCE_PATH and self.rebalance and now >= self.rebalance["visible_at"]:
            return {"noticeTime": self.rebalance["noticeTime"]}
        return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "EC2ws"
    state: _State  # set on the subclass per server

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: str | dict = "", content_type: str = "text/plain") -> None:
        if isinstance(body, dict):
            body, content_type = json.dumps(body), "application/json"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _inject_fault(self) -> bool:
        st = self.state
        with st.lock:
            if st.faults["timeouts"] > 0:
                st.faults["timeouts"] -= 1
                st.counts["timeouts"] += 1
                delay = st.faults["timeout_s"]
            elif st.faults["5xx"] > 0:
                st.faults["5xx"] -= 1
                st.counts["5xx"] += 1
                delay = None
            elif st.faults["truncated"] > 0 and self.command == "GET":
                st.faults["truncated"] -= 1
                st.counts["truncated"] += 1
                return self._send_truncated()
            elif st.faults["garbage"] > 0 and self.command == "GET":
                st.faults["garbage"] -= 1
                st.counts["garbage"] += 1
                self._send(200, '["not", "an", "object"]', "application/json")
                return True
            else:
                return False
        if delay is not None:
            time.sleep(delay)  # the client's short timeout fires first
            try:
                self._send(504, "timeout")
            except OSError:  # the client already hung up, as intended
                pass
        else:
            self._send(500, "Internal Server Error")
        return True

    def _send_truncated(self) -> bool:
        """Promise 100 bytes, send 10, drop the connection: what a reset mid-response looks like."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b'{"action":')
        self.wfile.flush()
        self.close_connection = True
        return True

    def do_PUT(self):
        st = self.state
        if self.path.startswith("/_control/"):
            return self._control()
        if self.path != TOKEN_PATH:
            return self._send(404, "Not Found")
        st.counts["token_requests"] += 1
        if self._inject_fault():
            return
        try:
            ttl = int(self.headers.get(TOKEN_TTL_HEADER, ""))
        except ValueError:
            return self._send(400, "Missing or invalid " + TOKEN_TTL_HEADER)
        if not 1 <= ttl <= 21600:
            return self._send(400, "Invalid " + TOKEN_TTL_HEADER)
        token = secrets.token_urlsafe(32)
        with st.lock:
            st.tokens[token] = time.monotonic() + min(ttl, st.max_token_ttl_s)
        self._send(200, token)

    def do_GET(self):
        st = self.state
        if self.path.startswith("/_control/"):
            return self._control()
        st.counts["requests"] += 1
        st.counts[self.path] += 1
        if self._inject_fault():
            return
        token = self.headers.get(TOKEN_HEADER)
        with st.lock:
            expiry = st.tokens.get(token or "")
        if expiry is None or time.monotonic() >= expiry:
            st.counts["unauthorized"] += 1
            return self._send(401, "Unauthorized")
        value = st.meta(self.path)
        if value is None:
            return self._send(404, "Not Found")
        self._send(200, value)

    def do_POST(self):
        if self.path.startswith("/_control/"):
            return self._control()
        self._send(405, "Method Not Allowed")

    def _control(self):
        st = self.state
        body = self._json_body() if self.command in ("POST", "PUT") else {}
        now = time.time()
        with st.lock:
            if self.path == "/_control/notice":
                visible = now + float(body.get("in_s", 0))
                st.notice = {"visible_at": visible, "action": body.get("action", "terminate"),
                             "time": body.get("time") or format_time(visible + NOTICE_LEAD_S)}
                return self._send(200, st.notice)
            if self.path == "/_control/rebalance":
                visible = now + float(body.get("in_s", 0))
                st.rebalance = {"visible_at": visible, "noticeTime": format_time(visible)}
                return self._send(200, st.rebalance)
            if self.path == "/_control/faults":
                for key in ("5xx", "timeouts", "timeout_s", "truncated", "garbage"):
                    if key in body:
                        st.faults[key] = body[key]
                return self._send(200, dict(st.faults))
            if self.path == "/_control/expire-tokens":
                st.tokens.clear()
                return self._send(200, {"expired": True})
            if self.path == "/_control/clear":
                st.notice = st.rebalance = None
                return self._send(200, {"cleared": True})
            if self.path == "/_control/stats":
                return self._send(200, {"counts": dict(st.counts), "notice": st.notice,
                                        "rebalance": st.rebalance, "tokens": len(st.tokens)})
        self._send(404, "unknown control path")


class ImdsServer:
    """The local metadata service in a thread. `env` points job.imds (and botocore) at it."""

    def __init__(self, *, instance_id: str = "i-0123456789abcdef0", instance_type: str = "g5.xlarge",
                 az: str = "us-east-1a", port: int = 0, max_token_ttl_s: int = 21600):
        self.state = _State(instance_id, instance_type, az, max_token_ttl_s)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": self.url}

    def start(self) -> "ImdsServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="imds", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ImdsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # The same control API over HTTP, so a subprocess-hosted server is driven identically.
    def control(self, name: str, body: dict | None = None) -> dict:
        return control(self.url, name, body)

    def schedule_notice(self, in_s: float = 0, action: str = "terminate") -> dict:
        return self.control("notice", {"in_s": in_s, "action": action})

    def schedule_rebalance(self, in_s: float = 0) -> dict:
        return self.control("rebalance", {"in_s": in_s})

    def inject_faults(self, *, errors_5xx: int = 0, timeouts: int = 0, timeout_s: float = 3.0, truncated: int = 0,
                      garbage: int = 0) -> dict:
        return self.control("faults", {"5xx": errors_5xx, "timeouts": timeouts, "timeout_s": timeout_s,
                                       "truncated": truncated, "garbage": garbage})

    def expire_tokens(self) -> dict:
        return self.control("expire-tokens")

    def stats(self) -> dict:
        return control(self.url, "stats", method="GET")


def control(url: str, name: str, body: dict | None = None, method: str = "POST") -> dict:
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(f"{url.rstrip('/')}/_control/{name}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as resp:
        return json.loads(resp.read())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--instance-id", default="i-0123456789abcdef0")
    parser.add_argument("--instance-type", default="g5.xlarge")
    parser.add_argument("--az", default="us-east-1a")
    parser.add_argument("--max-token-ttl", type=int, default=21600, help="cap on token lifetime (s)")
    args = parser.parse_args(argv)
    server = ImdsServer(instance_id=args.instance_id, instance_type=args.instance_type, az=args.az,
                        port=args.port, max_token_ttl_s=args.max_token_ttl)
    print(json.dumps({"url": server.url, "port": server.port}), flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
