"""A local stand-in for the Hugging Face Hub: serves one dataset repo from a directory over HTTP.

It answers the requests the real `huggingface_hub` client makes (read from huggingface_hub 2.4's hf_api.py and
file_download.py), so `snapshot_download`, `hf_hub_download`, `HfApi().dataset_info(files_metadata=True)`,
`list_repo_tree` and `job.download` work unchanged through `HF_ENDPOINT=http://127.0.0.1:PORT`:

  GET  /api/datasets/{repo}[/revision/{rev}][?blobs=true]   repo info: sha, siblings (rfilename, size, blobId, lfs)
  GET  /api/datasets/{repo}/tree/{rev}[/{path}][?recursive=true]   tree listing
  HEAD /datasets/{repo}/resolve/{rev}/{file}                X-Repo-Commit, ETag / X-Linked-Etag (sha256 for LFS
                                                            files), X-Linked-Size, Content-Length
  GET  /datasets/{repo}/resolve/{rev}/{file}                the bytes; `Range: bytes=a-[b]` gives 206

It never sends Xet headers (X-Xet-Hash, Link rel=xet-auth), so clients use plain HTTP. Like the real Hub for a
gated dataset, metadata is public while file downloads need a valid token (401 without one, 401 "Invalid
credentials" for a wrong one, 403 GatedRepo when the account has not accepted the terms).

Fault injection for tests: `cut_connections` drops the connection after N body bytes, `stall_connections` stops
sending after N bytes until `release()` (to kill a client mid-file), `corrupt_next` serves flipped bytes (same
length) once, `throttle_bps` caps each stream's rate. `log` records every request.

    python -m job.testing.hub_server --root DIR --repo ILSVRC/imagenet-1k --port 8765 [--token T]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from job.integrity import sha256_file

DEFAULT_REPO = "ILSVRC/imagenet-1k"
_LFS_SUFFIXES = (".parquet", ".arrow", ".tar", ".bin", ".safetensors", ".zip", ".gz")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str
    lfs: bool
    blob_id: str  # git oid: of the LFS pointer for LFS files, of the content otherwise


@dataclass
class Request:
    method: str
    path: str  # repo file path for resolve requests, else the URL path
    kind: str  # "info" | "tree" | "resolve" | "other"
    range: str | None
    status: int
    bytes_sent: int
    authorization: bool


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def scan_repo(root: Path) -> dict[str, RepoFile]:
    """Every non-hidden file under root, as the Hub would list it (parquet and other binaries in LFS)."""
    files: dict[str, RepoFile] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        size = path.stat().st_size
        sha = sha256_file(path)
        lfs = rel.endswith(_LFS_SUFFIXES)
        blob_id = _git_oid(_lfs_pointer(sha, size)) if lfs else _git_oid(path.read_bytes())
        files[rel] = RepoFile(rel, size, sha, lfs, blob_id)
    return files


class HubServer:
    """The local Hub. Use as a context manager, or start()/stop(). `url` is what HF_ENDPOINT should be."""

    def __init__(self, root, repo_id: str = DEFAULT_REPO, *, token: str | None = None, terms_accepted: bool = True,
                 throttle_bps: float | None = None, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self.repo_id = repo_id
        self.token = token
        self.terms_accepted = terms_accepted
        self.throttle_bps = throttle_bps
        self.files = scan_repo(self.root)
        self.commit = hashlib.sha1(
            json.dumps([(f.path, f.sha256) for f in self.files.values()]).encode()
        ).hexdigest()
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._cuts: list[list] = []  # [path or None, after_bytes, remaining_times]
        self._corrupt: dict[str, int] = {}
        self._stalls: list[list] = []  # [path or None, after_bytes, remaining_times]
        self._released = threading.Event()
        self._active = 0  # requests being answered
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # --- fault injection and inspection -------------------------------------------------------------------------
    def cut_connections(self, after_bytes: int, times: int = 1, path: str | None = None) -> None:
        """Drop the connection after `after_bytes` body bytes on the next `times` GETs (of `path`, or any file)."""
        with self._lock:
            self._cuts.append([path, int(after_bytes), int(times)])

    def stall_connections(self, after_bytes: int, times: int = 1, path: str | None = None) -> None:
        """On the next `times` GETs, send `after_bytes` body bytes, then hold the connection until release()."""
        with self._lock:
            self._stalls.append([path, int(after_bytes), int(times)])

    def release(self) -> None:
        self._released.set()

    def corrupt_next(self, path: str, times: int = 1) -> None:
        """Serve `path` with flipped bytes (same length, same headers) on its next `times` full GETs."""
        with self._lock:
            self._corrupt[path] = self._corrupt.get(path, 0) + times

    def requests(self, method: str | None = None, path: str | None = None, kind: str | None = None) -> list[Request]:
        """Logged requests, once those in flight have finished (a client can read a body before it is logged)."""
        self.wait_idle()
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method)
                    and (path is None or r.path == path) and (kind is None or r.kind == kind)]

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.requests(method="GET", path=path, kind="resolve"))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no request is being answered (e.g. a released stall has been logged)."""
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._active:
            raise TimeoutError(f"{self._active} request(s) still running after {timeout}s")

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def _take(self, rules: list[list], path: str) -> int | None:
        with self._lock:
            for rule in rules:
                if rule[2] > 0 and (rule[0] is None or rule[0] == path):
                    rule[2] -= 1
                    return rule[1]
        return None

    def _take_corrupt(self, path: str) -> bool:
        with self._lock:
            if self._corrupt.get(path, 0) > 0:
                self._corrupt[path] -= 1
                return True
        return False

    def _record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

        def log_message(self, *args) -> None:  # the request log replaces stderr noise
            pass

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        # --- routing ---------------------------------------------------------------------------------------------
        def _route(self, head: bool) -> None:
            with hub._lock:
                hub._active += 1
            try:
                self._dispatch(head)
            finally:
                with hub._lock:
                    hub._active -= 1

        def _dispatch(self, head: bool) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            api = f"/api/datasets/{hub.repo_id}"
            resolve = f"/datasets/{hub.repo_id}/resolve/"
            if url.path == api:
                return self._info("main", query, head)
            if url.path.startswith(api + "/revision/"):
                return self._info(unquote(url.path[len(api + "/revision/"):]), query, head)
            if url.path.startswith(api + "/tree/"):
                rev, _, sub = url.path[len(api + "/tree/"):].partition("/")
                return self._tree(unquote(rev), unquote(sub), query, head)
            if url.path.startswith(resolve):
                rev, _, file = url.path[len(resolve):].partition("/")
                return self._resolve(unquote(rev), unquote(file), head)
            if url.path.startswith(("/api/datasets/", "/datasets/")):
                return self._error(404, "RepoNotFound", "Repository not found", "other", head)
            return self._error(404, None, "Not found", "other", head)

        # --- endpoints -------------------------------------------------------------------------------------------
        def _info(self, revision: str, query: dict, head: bool) -> None:
            if self._denied("info", head, for_files=False) or self._bad_revision(revision, "info", head):
                return
            blobs = query.get("blobs", "").lower() in ("1", "true")
            siblings = []
            for f in hub.files.values():
                entry = {"rfilename": f.path}
                if blobs:
                    entry.update(size=f.size, blobId=f.blob_id)
                    if f.lfs:
                        entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(_lfs_pointer(f.sha256, f.size))}
                siblings.append(entry)
            body = {
                "_id": hub.commit[:24], "id": hub.repo_id, "author": hub.repo_id.split("/")[0], "sha": hub.commit,
                "private": False, "gated": "auto" if hub.token else False, "disabled": False,
                "lastModified": "2024-01-01T00:00:00.000Z", "tags": [], "downloads": 0, "likes": 0,
                "siblings": siblings, "cardData": {},
            }
            self._json(200, body, "info", head)

        def _tree(self, revision: str, sub: str, query: dict, head: bool) -> None:
            if self._denied("tree", head, for_files=False) or self._bad_revision(revision, "tree", head):
                return
            recursive = query.get("recursive", "").lower() in ("1", "true")
            prefix = sub.strip("/") + "/" if sub.strip("/") else ""
            entries, folders = [], set()
            for f in hub.files.values():
                if not f.path.startswith(prefix):
                    continue
                rest = f.path[len(prefix):]
                parts = rest.split("/")
                for depth in range(1, len(parts)):  # folders on the way to the file
                    if recursive or depth == 1:
                        folders.add(prefix + "/".join(parts[:depth]))
                if len(parts) > 1 and not recursive:
                    continue
                item = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.lfs:
                    item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(_lfs_pointer(f.sha256, f.size))}
                entries.append(item)
            if prefix and not entries and not folders:
                return self._error(404, "EntryNotFound", f"{sub} does not exist on {revision}", "tree", head)
            folder_items = [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                            for p in sorted(folders)]
            self._json(200, folder_items + entries, "tree", head)

        def _resolve(self, revision: str, file: str, head: bool) -> None:
            if self._bad_revision(revision, "resolve", head, path=file):
                return
            f = hub.files.get(file)
            if f is None:
                return self._error(404, "EntryNotFound", f"{file} does not exist", "resolve", head, path=file,
                                   extra={"X-Repo-Commit": hub.commit})
            if self._denied("resolve", head, for_files=True, path=file):
                return
            start, end = 0, f.size - 1
            status = 200
            requested = self.headers.get("Range")
            if requested:
                parsed = _parse_range(requested, f.size)
                if parsed is None:
                    return self._error(416, None, "Range not satisfiable", "resolve", head, path=file,
                                       extra={"Content-Range": f"bytes */{f.size}"})
                start, end = parsed
                status = 206
            length = end - start + 1
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Accept-Ranges": "bytes",
                "X-Repo-Commit": hub.commit,
                "ETag": f'"{f.sha256 if f.lfs else f.blob_id}"',
                "Content-Disposition": f'inline; filename="{file.rsplit("/", 1)[-1]}"',
            }
            if f.lfs:
                headers["X-Linked-Etag"] = f'"{f.sha256}"'
                headers["X-Linked-Size"] = str(f.size)
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            sent = 0 if head else self._send_body(hub.root / f.path, file, start, length, status == 200)
            hub._record(Request(self.command, file, "resolve", requested, status, sent, self._has_auth()))

        # --- helpers ---------------------------------------------------------------------------------------------
        def _send_body(self, path: Path, file: str, start: int, length: int, full: bool) -> int:
            cut = hub._take(hub._cuts, file)
            stall = hub._take(hub._stalls, file)
            corrupt = full and hub._take_corrupt(file)
            limit = length if cut is None else min(cut, length)
            sent = 0
            stalled = stall is None
            began = time.monotonic()
            try:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    while sent < limit:
                        if not stalled and sent >= stall:
                            self.wfile.flush()
                            hub._released.wait()
                            stalled = True
                        step = _CHUNK if not hub.throttle_bps else 64 * 1024
                        if not stalled:
                            step = min(step, stall - sent)
                        chunk = fh.read(min(step, limit - sent))
                        if not chunk:
                            break
                        if corrupt:
                            chunk = bytes(b ^ 0xFF for b in chunk[:64]) + chunk[64:]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if hub.throttle_bps:
                            ahead = sent / hub.throttle_bps - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return sent
            if cut is not None and sent < length:
                # Drop the connection mid-body: the client sees a short read, as on a flaky network.
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
            return sent

        def _has_auth(self) -> bool:
            return bool(self.headers.get("Authorization"))

        def _denied(self, kind: str, head: bool, *, for_files: bool, path: str | None = None) -> bool:
            if hub.token is None:
                return False
            auth = self.headers.get("Authorization")
            repo = f"dataset {hub.repo_id}"
            if auth is None:
                if not for_files:
                    return False  # a gated repo's metadata is public on the Hub; its files are not
                self._error(401, "GatedRepo", f"Access to {repo} is restricted. You must have access to it and be "
                            "authenticated to access it. Please log in.", kind, head, path=path)
                return True
            if auth != f"Bearer {hub.token}":
                self._error(401, None, "Invalid credentials in Authorization header", kind, head, path=path)
                return True
            if for_files and not hub.terms_accepted:
                self._error(403, "GatedRepo", f"Access to {repo} is restricted and you are not in the authorized "
                            f"list. Visit {hub.url}/datasets/{hub.repo_id} to ask for access.", kind, head, path=path)
                return True
            return False

        def _bad_revision(self, revision: str, kind: str, head: bool, path: str | None = None) -> bool:
            if revision in ("main", hub.commit):
                return False
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", kind, head, path=path)
            return True

        def _json(self, status: int, body, kind: str, head: bool) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Repo-Commit", hub.commit)
            self.end_headers()
            if not head:
                self.wfile.write(data)
            hub._record(Request(self.command, urlsplit(self.path).path, kind, None, status,
                                0 if head else len(data), self._has_auth()))

        def _error(self, status: int, code: str | None, message: str, kind: str, head: bool, *,
                   path: str | None = None, extra: dict | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            hub._record(Request(self.command, path or urlsplit(self.path).path, kind, self.headers.get("Range"),
                                status, 0, self._has_auth()))

    return Handler


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-` or `bytes=-n` (one range only, as the Hub client sends) → inclusive (start, end)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start >= size or start > end:
        return None
    return start, end


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Serve a directory as a Hugging Face Hub dataset repo (local drill).")
    parser.add_argument("--root", required=True, help="directory laid out like the repo (data/*.parquet, README.md)")
    parser.add_argument("--repo", default=DEFAULT_REPO)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None, help="require this token for file downloads (gated dataset)")
    parser.add_argument("--throttle-bps", type=float, default=None, help="cap each connection's rate (bytes/s)")
    args = parser.parse_args(argv)
    server = HubServer(args.root, args.repo, token=args.token, host=args.host, port=args.port,
                       throttle_bps=args.throttle_bps).start()
    print(json.dumps({"url": server.url, "repo": args.repo, "files": len(server.files), "commit": server.commit}),
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
