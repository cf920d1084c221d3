"""Download a Hub dataset's parquet shards (ImageNet-1K: ~155 GB in 300 files), resumably and in parallel.

    python -m job.download --repo ILSVRC/imagenet-1k --revision main --splits train,validation --out DIR \
        [--workers 8] [--token-parameter /spot-resnet/hf-token]

Files keep their repo paths under OUT (OUT/data/train-00000-of-00294.parquet), which is what job.prepare reads.

How it uses huggingface_hub: the repo's file list, sizes and sha256 come from `HfApi.dataset_info(files_metadata=
True)` at one pinned commit; each file's location comes from `get_hf_file_metadata` (the HEAD the library makes);
bytes arrive through the library's `http_get`, which already retries a dropped connection with a Range request.
We do not call `hf_hub_download(local_dir=...)` because in huggingface_hub 2.4 it writes each file to a
uniquely-named temporary file and deletes it on failure, so a killed run throws away every partial file (up to
workers x 0.5 GB here). Instead a partial file lives at OUT/.partial/<path>.part under a stable name and the next
run hands its length to `http_get(resume_size=...)`. Every finished file is checked against the Hub's sha256
before it is moved into place; a mismatch is deleted and fetched again. Verified files are recorded in
OUT/.verified.json (size, mtime, sha256) so a re-run skips them without re-hashing 155 GB.

Plain HTTP rather than hf_xet: on the Hub, Xet-backed files are still served by the resolve URL (a redirect to a
CDN that honours Range), xet's chunk de-duplication buys nothing for a one-off download of unique parquet, and
xet_get cannot resume a partial file across runs.

The token comes from the `token` argument, else HF_TOKEN, else an SSM SecureString (--token-parameter). It is
sent only to the Hub (dropped on a redirect to a CDN) and never printed or logged.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from job.integrity import VerifiedFiles, ensure_free_space, hash_file

DEFAULT_REPO = "ILSVRC/imagenet-1k"
DEFAULT_ENDPOINT = "https://huggingface.co"
PARTIAL_DIR = ".partial"
ATTEMPTS = 2  # a checksum mismatch is fetched once more, then it is an error


class DownloadError(RuntimeError):
    """A download that cannot go on; the message names the fix."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    digest: str
    algorithm: str  # "sha256" for LFS files (all parquet), "git-sha1" (the blob id) otherwise


def resolve_token(token: str | None = None, token_parameter: str | None = None) -> str | None:
    """The Hub token: explicit, else HF_TOKEN, else an SSM SecureString parameter; None when there is none."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    if not token_parameter:
        return None
    from job.s3 import client

    ssm = client("ssm")
    try:
        return ssm.get_parameter(Name=token_parameter, WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise DownloadError(
            f"SSM parameter {token_parameter!r} does not exist: store the token with `aws ssm put-parameter "
            f"--name {token_parameter} --type SecureString --value hf_...`, or export HF_TOKEN=hf_..."
        ) from None


def split_patterns(splits) -> list[str]:
    return [f"data/{split}-*.parquet" for split in splits]


def list_files(api, repo_id: str, revision: str, splits, token) -> tuple[str, list[RemoteFile]]:
    """The pinned commit and the split files with their sizes and checksums, from the Hub's metadata."""
    info = api.dataset_info(repo_id, revision=revision, files_metadata=True, token=token)
    by_split: dict[str, list[RemoteFile]] = {split: [] for split in splits}
    for sibling in info.siblings or []:
        for split, pattern in zip(splits, split_patterns(splits)):
            if fnmatch.fnmatchcase(sibling.rfilename, pattern):
                if sibling.lfs is not None:
                    remote = RemoteFile(sibling.rfilename, sibling.lfs.size, sibling.lfs.sha256, "sha256")
                else:
                    remote = RemoteFile(sibling.rfilename, sibling.size, sibling.blob_id, "git-sha1")
                by_split[split].append(remote)
    empty = [split for split, files in by_split.items() if not files]
    if empty:
        present = sorted({s.rfilename.split("/")[-1].split("-")[0] for s in info.siblings or []
                          if s.rfilename.startswith("data/") and s.rfilename.endswith(".parquet")})
        raise DownloadError(
            f"{repo_id}@{revision} has no files for split(s) {', '.join(empty)} (looked for "
            f"{', '.join(split_patterns(empty))}); splits found: {', '.join(present) or 'none'}. Fix --splits."
        )
    return info.sha, sorted((f for files in by_split.values() for f in files), key=lambda f: f.path)


def explain_hub_error(error: Exception, repo_id: str, endpoint: str, token: str | None) -> DownloadError | None:
    """Turn the Hub's 401/403/404 into an error that says what to do; None for anything else."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if not isinstance(error, HfHubHTTPError) or error.response is None:
        return None
    status = error.response.status_code
    page = f"{endpoint}/datasets/{repo_id}"
    if isinstance(error, RevisionNotFoundError):
        return DownloadError(f"{repo_id} has no revision matching --revision ({page}): use a branch, tag or commit.")
    if status == 401 and not token:
        return DownloadError(
            f"{repo_id} needs a Hugging Face token and none was found. Accept the dataset's terms at {page}, "
            "create a read token at https://huggingface.co/settings/tokens, then `export HF_TOKEN=hf_...` "
            "(or store it in SSM and pass --token-parameter NAME)."
        )
    if status == 401:
        return DownloadError(
            f"the Hugging Face token was rejected (401: invalid or expired) for {repo_id}. Create a new read token "
            "at https://huggingface.co/settings/tokens and `export HF_TOKEN=hf_...` (or update the SSM parameter)."
        )
    if status == 403:
        return DownloadError(
            f"the Hugging Face token is valid but its account has not accepted the terms of {repo_id} (403). "
            f"Log in as the token's owner, accept the terms at {page}, and re-run; a fine-grained token also "
            "needs 'Read access to contents of all public gated repos you can access'."
        )
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        return DownloadError(f"dataset repo {repo_id} was not found at {endpoint}: check --repo (and HF_ENDPOINT).")
    return None


class _ByteProgress:
    """One tqdm bar (bytes/s, ETA) fed by every worker's http_get; also counts bytes actually received."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="download",
                        disable=not enabled, smoothing=0.1)
        self.received = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.received += n
            self.bar.update(n)

    def grow(self, n: int) -> None:
        with self.lock:
            self.bar.total += n
            self.bar.refresh()

    def tqdm_class(self):
        progress = self

        class PerFile:  # what http_get instantiates per file; forwards into the shared bar
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                progress.add(int(n or 0))

            def close(self):
                pass

        return PerFile


class _Downloader:
    def __init__(self, repo_id: str, commit: str, out: Path, endpoint: str, token: str | None,
                 verified: VerifiedFiles, progress: _ByteProgress):
        self.repo_id, self.commit, self.out = repo_id, commit, out
        self.endpoint, self.token = endpoint, token
        self.verified, self.progress = verified, progress

    def partial_path(self, f: RemoteFile) -> Path:
        return self.out / PARTIAL_DIR / (f.path + ".part")

    def fetch(self, f: RemoteFile) -> None:
        """Download one file (resuming its partial), verify it and move it into place."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        part = self.partial_path(f)
        part.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, ATTEMPTS + 1):
            url = hf_hub_url(self.repo_id, f.path, repo_type="dataset", revision=self.commit, endpoint=self.endpoint)
            meta = get_hf_file_metadata(url, token=self.token or False, endpoint=self.endpoint, retry_on_errors=True)
            headers = build_hf_headers(token=self.token or False)
            if urlsplit(meta.location).netloc != urlsplit(url).netloc:
                headers.pop("authorization", None)  # a signed CDN URL: the token stays on the Hub
            resume = part.stat().st_size if part.exists() else 0
            if resume > f.size:  # not a prefix of this file: start over
                part.unlink()
                resume = 0
            with open(part, "ab") as fh:
                http_get(meta.location, fh, resume_size=resume, headers=headers, expected_size=f.size,
                         tqdm_class=self.progress.tqdm_class(), displayed_filename=f.path)
            actual = hash_file(part, f.algorithm)
            if actual == f.digest:
                dest = self.out / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, dest)
                self.verified.record(f.path, f.digest, f.algorithm)
                return
            part.unlink()
            print(f"{f.path}: checksum mismatch (expected {f.algorithm} {f.digest}, got {actual}); "
                  f"deleted{', fetching again' if attempt < ATTEMPTS else ''}", file=sys.stderr)
            self.progress.grow(f.size)
        raise DownloadError(
            f"{f.path} failed its checksum {ATTEMPTS} times (expected {f.algorithm} {f.digest}): the Hub or a proxy "
            "is serving bad bytes. Re-run later; files already verified are kept."
        )


def download(repo_id: str = DEFAULT_REPO, out_dir=None, revision: str = "main", splits=("train", "validation"),
             workers: int = 8, token: str | None = None, *, token_parameter: str | None = None,
             endpoint: str | None = None, progress: bool = True) -> dict:
    """Download the split files of `repo_id` into out_dir; safe to re-run. Returns a summary dict."""
    from huggingface_hub import HfApi

    from job.paths import hub_dir

    started = time.monotonic()
    splits = [s.strip() for s in (splits.split(",") if isinstance(splits, str) else splits) if s.strip()]
    if not splits:
        raise DownloadError("no splits given: pass e.g. --splits train,validation")
    if workers < 1:
        raise DownloadError(f"--workers must be at least 1 (got {workers})")
    out = Path(out_dir) if out_dir is not None else hub_dir(repo_id)
    out.mkdir(parents=True, exist_ok=True)
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    token = resolve_token(token, token_parameter)
    api = HfApi(endpoint=endpoint)

    try:
        commit, files = list_files(api, repo_id, revision, splits, token or False)
    except Exception as error:
        _raise_explained(error, repo_id, endpoint, token)

    verified = VerifiedFiles(out)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # hashing releases the GIL: verify in parallel too
        complete = list(pool.map(lambda f: verified.check(f.path, f.size, f.digest, f.algorithm), files))
    missing = [f for f, ok in zip(files, complete) if not ok]
    for f in missing:
        (out / f.path).unlink(missing_ok=True)  # wrong size or checksum: never leave it where prepare looks
        verified.forget(f.path)

    partial_bytes = {}
    for f in missing:
        part = out / PARTIAL_DIR / (f.path + ".part")
        partial_bytes[f.path] = min(part.stat().st_size, f.size) if part.exists() else 0
    still_needed = sum(f.size - partial_bytes[f.path] for f in missing)
    ensure_free_space(out, still_needed, f"downloading {len(missing)} file(s) of {repo_id}")

    if missing:  # one HEAD first, so a token or terms problem is reported before any progress output
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        try:
            get_hf_file_metadata(hf_hub_url(repo_id, missing[0].path, repo_type="dataset", revision=commit,
                                            endpoint=endpoint), token=token or False, endpoint=endpoint)
        except Exception as error:
            _raise_explained(error, repo_id, endpoint, token)

    bar = _ByteProgress(still_needed, progress)
    downloader = _Downloader(repo_id, commit, out, endpoint, token, verified, bar)
    try:
        if missing:
            _run_parallel(downloader, missing, workers, repo_id, endpoint, token)
    finally:
        bar.bar.close()
    partials = out / PARTIAL_DIR
    if partials.is_dir() and not any(p.is_file() for p in partials.rglob("*")):
        shutil.rmtree(partials)  # only empty folders left: every file arrived
    seconds = time.monotonic() - started
    return {
        "repo": repo_id, "revision": revision, "commit": commit, "out": str(out), "splits": splits,
        "files": len(files), "downloaded": len(missing), "skipped": len(files) - len(missing),
        "bytes_total": sum(f.size for f in files), "bytes_downloaded": bar.received,
        "bytes_resumed": sum(partial_bytes.values()), "seconds": round(seconds, 3),
        "bytes_per_s": round(bar.received / seconds, 1) if seconds > 0 else 0.0,
    }


def _run_parallel(downloader: _Downloader, files: list[RemoteFile], workers: int, repo_id: str, endpoint: str,
                  token: str | None) -> None:
    # Largest first, so the last minutes are not one big file on one connection.
    ordered = sorted(files, key=lambda f: -f.size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub-download") as pool:
        futures = [pool.submit(downloader.fetch, f) for f in ordered]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((fut for fut in done if fut.exception() is not None), None)
        if failed is None:
            return
        for fut in pending:
            fut.cancel()  # the running ones finish their file (its .part is kept for the next run)
        error = failed.exception()
    _raise_explained(error, repo_id, endpoint, token)


def _raise_explained(error: BaseException, repo_id: str, endpoint: str, token: str | None):
    """Re-raise a Hub error as the DownloadError that names its fix; anything else unchanged."""
    explained = explain_hub_error(error, repo_id, endpoint, token) if isinstance(error, Exception) else None
    if explained is None:
        raise error
    raise explained from None  # the fix is the message; the HTTP trace adds nothing for the operator


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Download a Hub dataset's parquet shards (resumable, parallel).")
    parser.add_argument("--repo", default=DEFAULT_REPO)
    parser.add_argument("--revision", default="main")
    parser.add_argument("--splits", default="train,validation", help="comma-separated, e.g. train,validation")
    parser.add_argument("--out", default=None, help="default: $SPOT_DATA_DIR/hub/<repo>")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--token-parameter", default=None,
                        help="name of an SSM SecureString holding the Hub token (used when HF_TOKEN is unset)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = download(args.repo, args.out, args.revision, args.splits, args.workers,
                           token_parameter=args.token_parameter, progress=not args.no_progress)
    except (DownloadError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
