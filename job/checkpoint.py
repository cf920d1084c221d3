"""Checkpoints that survive a spot reclaim: atomic local files, verified S3 copies, a pointer written last.

Life of one checkpoint (`CheckpointStore.save`):
1. On the training thread: the state is copied to CPU memory (a snapshot; training may go on mutating
   the live tensors).
2. On the store's single background thread, in order:
   write `step-XXXXXXXXX.pt.json` (sha256, size) and `step-XXXXXXXXX.pt` atomically (temp file, fsync,
   rename, fsync of the directory); upload with boto3's TransferManager (multipart, concurrent parts,
   botocore retries per request, whole-upload retries here); verify with head_object (size and our
   sha256 metadata; botocore also sends a CRC32 of every part, which S3 checks); only then rewrite
   `latest.json` (its "epoch" is the epoch the run resumes in); then
   prune to the newest K, never touching a checkpoint newer than the last durable one.
`save` returns a Future that resolves to a `Durable` once the S3 copy is verified: periodic and epoch
checkpoints ignore it, the spot-notice path waits on it.

Finding the checkpoint to resume from (`find_latest`): local copies and S3 objects are tried newest
first; each is checked against its sha256 before use; a corrupt or truncated one is reported by name
(and a local one renamed `*.corrupt`, never deleted) and the previous one is tried.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from job import layout
from job.shards import sha256_file

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"step-(\d{9})\.pt$")


class ConfigMismatch(RuntimeError):
    """The checkpoint was made with a config that would change the trajectory if resumed."""


class UploadFailed(RuntimeError):
    """All upload attempts failed; the local checkpoint is kept."""


@dataclass
class Durable:
    key: str
    sha256: str
    size: int
    global_step: int
    epoch: int
    time: float
    timings: dict = field(default_factory=dict)

    def pointer(self) -> dict:
        """What latest.json holds (docs/CONTRACTS.md)."""
        return {k: v for k, v in asdict(self).items() if k != "timings"}


@dataclass
class Found:
    path: Path
    global_step: int
    sha256: str
    source: str          # "local" or "s3"
    problems: list       # messages about newer checkpoints that were rejected


def checkpoint_name(run: str, global_step: int) -> str:
    return layout.checkpoint_key(run, global_step).rsplit("/", 1)[-1]


class _HashingWriter:
    """File wrapper for torch.save: hashes and counts the bytes as they are written (one pass)."""

    def __init__(self, raw):
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(value, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(state: dict, path: Path) -> dict:
    """torch.save to a temp file, fsync, write the sha256 sidecar, rename. Returns sha256, size, timings."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    t0 = time.perf_counter()
    with open(tmp, "wb") as raw:
        writer = _HashingWriter(raw)
        torch.save(state, writer)
        raw.flush()
        t1 = time.perf_counter()
        os.fsync(raw.fileno())
    t2 = time.perf_counter()
    meta = {"sha256": writer.digest.hexdigest(), "size": writer.size, "global_step": state["global_step"],
            "epoch": state["epoch"], "time": time.time()}
    # The sidecar goes first: a checkpoint file without one is never trusted, one without a file is ignored.
    _write_json_atomic(_meta_path(path), meta)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return {**meta, "serialize_s": t1 - t0, "fsync_s": t2 - t1}


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _problem(path: Path, sha256: str | None, size: int | None) -> str | None:
    """Why the file at path is not the expected checkpoint, or None when it is."""
    if not path.exists():
        return "missing"
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"truncated or wrong size: {actual_size} bytes, expected {size}"
    if not sha256:
        return "no sha256 recorded for it"
    actual = sha256_file(path)
    if actual != sha256:
        return f"sha256 mismatch: {actual[:12]}..., expected {sha256[:12]}..."
    return None


def _lower_thread_priority(niceness: int = 10) -> None:
    """Background writes and uploads yield the CPU to training and data loading (Linux: nice is per thread,
    and TransferManager's threads inherit it). The notice path waits for them while training is stopped."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: run at normal priority
        log.debug("could not lower the checkpoint thread's priority: %s", exc)


def cpu_snapshot(obj):
    """A deep copy of a state tree with every tensor copied to CPU memory."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_snapshot(v) for v in obj)
    return obj


class CheckpointStore:
    def __init__(self, local_dir: Path, *, run: str, bucket: str | None = None, s3=None, keep: int = 3,
                 upload_attempts: int = 3, retry_wait_s: float = 1.0, transfer_config=None, on_durable=None,
                 on_upload_error=None):
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.run = layout.check_run_name(run)
        self.bucket = bucket
        self._s3 = s3
        self.keep = max(1, int(keep))
        self.upload_attempts = upload_attempts
        self.retry_wait_s = retry_wait_s
        self._transfer_config = transfer_config
        self.on_durable = on_durable
        self.on_upload_error = on_upload_error
        self.last_durable: Durable | None = None
        self.rejected: list[str] = []
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload",
                                            initializer=_lower_thread_priority)

    # --- plumbing ---------------------------------------------------------------------------------------
    @property
    def s3(self):
        if self._s3 is None and self.bucket:
            from job import s3 as s3mod

            self._s3 = s3mod.client("s3")
        return self._s3

    @property
    def transfer_config(self):
        if self._transfer_config is None:
            from job.s3 import transfer_config

            self._transfer_config = transfer_config()
        return self._transfer_config

    def path_for(self, global_step: int) -> Path:
        return self.local_dir / checkpoint_name(self.run, global_step)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    # --- saving -------------------------------------------------------------------------------------------
    def save(self, state: dict) -> Future:
        """Snapshot now, then write + upload + verify + point `latest` in the background (in order)."""
        step = int(state["global_step"])
        with self._lock:
            earlier = self._pending.get(step)
            if earlier is not None:  # e.g. an epoch-end checkpoint, then a notice before any new step
                if not (earlier.done() and earlier.exception() and self.path_for(step).exists()):
                    return earlier
                # that upload failed but its file is on disk: try the upload again rather than rewriting
                meta = json.loads(_meta_path(self.path_for(step)).read_text())
                self._pending[step] = self._executor.submit(self._upload, self.path_for(step), meta, {})
                return self._pending[step]
            started = time.perf_counter()
            snapshot = cpu_snapshot(state)
            snapshot_s = time.perf_counter() - started
            future = self._executor.submit(self._write_and_upload, snapshot, snapshot_s)
            self._pending[step] = future
            return future

    def _write_and_upload(self, snapshot: dict, snapshot_s: float) -> Durable | None:
        path = self.path_for(snapshot["global_step"])
        written = write_atomic(snapshot, path)
        del snapshot
        timings = {"snapshot_s": snapshot_s, "serialize_s": written["serialize_s"], "fsync_s": written["fsync_s"]}
        log.info("checkpoint %s written (%.1f MB)", path.name, written["size"] / 1e6)
        if not self.bucket:
            # No S3 copy to wait for: the file just written is the newest valid one, so keeping the newest K
            # locally never drops the only valid checkpoint (without this a local-only run fills the disk).
            self._prune_local(written["global_step"])
            return None
        return self._upload(path, written, timings)

    def _upload(self, path: Path, meta: dict, timings: dict) -> Durable:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        key = layout.checkpoint_key(self.run, meta["global_step"])
        last_error = None
        for attempt in range(1, self.upload_attempts + 1):
            try:
                t0 = time.perf_counter()
                self.s3.upload_file(str(path), self.bucket, key, Config=self.transfer_config,
                                    ExtraArgs={"Metadata": {"sha256": meta["sha256"], "epoch": str(meta["epoch"]),
                                                            "global-step": str(meta["global_step"])}})
                t1 = time.perf_counter()
                problem = self._remote_problem(key, meta["sha256"], meta["size"])
                if problem:
                    raise UploadFailed(f"s3://{self.bucket}/{key} failed verification: {problem}")
                durable = Durable(key=key, sha256=meta["sha256"], size=meta["size"], global_step=meta["global_step"],
                                  epoch=meta["epoch"], time=time.time())
                # The pointer moves only forward and only to a verified object.
                if self.last_durable is None or durable.global_step >= self.last_durable.global_step:
                    from job.s3 import put_json

                    put_json(self.s3, self.bucket, layout.latest_checkpoint_key(self.run), durable.pointer())
                    self.last_durable = durable
                durable.timings = {**timings, "upload_s": t1 - t0, "verify_s": time.perf_counter() - t1,
                                   "attempts": attempt}
                break
            except (BotoCoreError, ClientError, S3UploadFailedError, UploadFailed, OSError) as exc:
                last_error = exc
                log.warning("upload of %s to s3://%s/%s failed (attempt %d/%d): %s", path.name, self.bucket, key,
                            attempt, self.upload_attempts, exc)
                if attempt < self.upload_attempts:
                    time.sleep(self.retry_wait_s * 2 ** (attempt - 1))
        else:
            error = UploadFailed(f"checkpoint {path.name} could not be uploaded to s3://{self.bucket}/{key} after "
                                 f"{self.upload_attempts} attempts ({last_error}); the local copy is kept at {path} "
                                 "and is uploaded when the trainer next starts")
            if self.on_upload_error:
                self.on_upload_error(meta["global_step"], str(error))
            raise error
        self._prune(durable.global_step)
        if self.on_durable:
            self.on_durable(durable)
        return durable

    def _remote_problem(self, key: str, sha256: str, size: int) -> str | None:
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        if head["ContentLength"] != size:
            return f"{head['ContentLength']} bytes, expected {size}"
        stored = head.get("Metadata", {}).get("sha256")
        if stored != sha256:
            return f"sha256 metadata {stored!r}, expected {sha256!r}"
        return None

    # --- retention ----------------------------------------------------------------------------------------
    def _prune(self, durable_step: int) -> None:
        """Keep the newest `keep` checkpoints up to the durable one; anything newer is still in flight."""
        from job.s3 import list_keys

        remote = sorted((int(m.group(1)), key) for key in list_keys(self.s3, self.bucket,
                                                                     layout.checkpoint_prefix(self.run))
                        if (m := _STEP_FILE.search(key)))
        old_remote = [key for step, key in remote if step <= durable_step][:-self.keep]
        for key in old_remote:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        self._prune_local(durable_step)

    def _prune_local(self, durable_step: int) -> None:
        local = sorted(self._local_metas())
        for step in [s for s in local if s <= durable_step][:-self.keep]:
            path = self.path_for(step)
            path.unlink(missing_ok=True)
            _meta_path(path).unlink(missing_ok=True)

    def _local_metas(self) -> dict[int, dict]:
        metas = {}
        for meta_file in self.local_dir.glob("step-*.pt.json"):
            match = _STEP_FILE.search(meta_file.name[: -len(".json")])
            if not match:
                continue
            try:
                metas[int(match.group(1))] = json.loads(meta_file.read_text())
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable checkpoint record %s: %s", meta_file, exc)
        return metas

    # --- finding the checkpoint to resume from --------------------------------------------------------
    def find_latest(self) -> Found | None:
        """The newest checkpoint whose bytes match its sha256, local copy preferred; None on a fresh run."""
        problems: list[str] = []
        self.rejected = problems      # also readable when nothing valid is left (find_latest -> None)
        local = self._local_metas()
        remote: dict[int, str] = {}
        pointer = None
        if self.bucket:
            from job.s3 import get_json, list_keys

            pointer = get_json(self.s3, self.bucket, layout.latest_checkpoint_key(self.run))
            for key in list_keys(self.s3, self.bucket, layout.checkpoint_prefix(self.run)):
                if match := _STEP_FILE.search(key):
                    remote[int(match.group(1))] = key
            if pointer:
                self.last_durable = Durable(**{k: pointer[k] for k in
                                               ("key", "sha256", "size", "global_step", "epoch", "time")})
        for step in sorted(set(local) | set(remote), reverse=True):
            if step in local:
                path, meta = self.path_for(step), local[step]
                problem = _problem(path, meta.get("sha256"), meta.get("size"))
                if problem is None:
                    self._upload_if_not_durable(path, meta)
                    return Found(path, step, meta["sha256"], "local", problems)
                if problem != "missing":
                    problems.append(self._reject_local(path, problem))
            if step in remote:
                found = self._fetch(remote[step], step, pointer, problems)
                if found:
                    return found
        return None

    def _reject_local(self, path: Path, problem: str) -> str:
        quarantine = path.with_name(path.name + f".corrupt-{int(time.time())}")
        os.replace(path, quarantine)
        _meta_path(path).unlink(missing_ok=True)
        message = f"checkpoint {path} is corrupt ({problem}); kept as {quarantine.name}, trying the previous one"
        log.error(message)
        return message

    def _fetch(self, key: str, step: int, pointer: dict | None, problems: list) -> Found | None:
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        expected = head.get("Metadata", {}).get("sha256")
        size = None
        if pointer and pointer.get("key") == key:
            if expected and expected != pointer["sha256"]:
                expected = None  # object and pointer disagree: it was overwritten, trust neither
            else:
                expected, size = pointer["sha256"], pointer["size"]
        path = self.path_for(step)
        tmp = path.with_name(f".{path.name}.download-{os.getpid()}")
        log.info("downloading s3://%s/%s (%.1f MB)", self.bucket, key, head["ContentLength"] / 1e6)
        self.s3.download_file(self.bucket, key, str(tmp), Config=self.transfer_config)
        problem = _problem(tmp, expected, size)
        if problem:
            tmp.unlink(missing_ok=True)
            message = f"checkpoint s3://{self.bucket}/{key} is corrupt ({problem}); trying the previous one"
            log.error(message)
            problems.append(message)
            return None
        meta = {"sha256": expected, "size": tmp.stat().st_size, "global_step": step,
                "epoch": int(head.get("Metadata", {}).get("epoch", -1)), "time": time.time()}
        _write_json_atomic(_meta_path(path), meta)
        os.replace(tmp, path)
        return Found(path, step, expected, "s3", problems)

    def _upload_if_not_durable(self, path: Path, meta: dict) -> None:
        """A local checkpoint newer than the S3 pointer (its upload failed or was cut off): upload it now."""
        if not self.bucket:
            return
        if self.last_durable and self.last_durable.global_step >= meta["global_step"]:
            return
        log.info("checkpoint %s is not durable in S3 yet; uploading it in the background", path.name)
        with self._lock:
            self._pending[meta["global_step"]] = self._executor.submit(self._upload, path, meta, {})

    def busy(self) -> bool:
        """True while any checkpoint is still being written, uploaded or verified."""
        return any(not future.done() for future in self._pending.values())

    def pending(self, global_step: int) -> Future | None:
        return self._pending.get(global_step)


def load(path: Path) -> dict:
    """The state dict of a verified checkpoint file (tensors on CPU; plain data only, no pickled code)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def check_resumable(state: dict, cfg) -> None:
    """Refuse a checkpoint whose trajectory-defining config differs, naming the differing keys."""
    from job import recipes

    if state.get("config_hash") == recipes.config_hash(cfg):
        return
    diffs = recipes.resume_differences(state.get("config", {}), cfg)
    if not diffs:
        return
    listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diffs.items())
    raise ConfigMismatch(
        f"refusing to resume from checkpoint at global step {state.get('global_step')}: the training config "
        f"changed in ways that alter the run ({listing}). Set these overrides back to the checkpoint's values "
        "to resume, or start a new run name to train with the new config.")
