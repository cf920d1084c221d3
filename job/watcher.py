"""Spot-interruption watcher: turns the two-minute notice into a durable checkpoint.

    python -m job.watcher [--run-dir DIR | --pid PID ...] [--bucket B --run R] [--interval 5]
                          [--rebalance-checkpoint | --no-rebalance-checkpoint]

Every `interval` seconds it reads spot/instance-action and events/recommendations/rebalance over IMDSv2.
On a spot notice it sends SIGUSR1 to the trainer (every rank in RUNDIR/pids/, or the --pid processes),
waits until the trainer reports its checkpoint durable (trainer.json, bounded by the notice's action
time), records a "notice" event in the run records and exits. On a rebalance recommendation it sends
SIGUSR2 once (an early checkpoint; training continues). It signals only those processes and only on a
notice; metadata errors (timeouts, 5xx, an expired token) are logged and retried with backoff.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from job import paths
from job.imds import IMDS, IMDSError, parse_time

log = logging.getLogger("job.watcher")

FINAL_TRAINER_STATES = ("interrupted", "finished", "failed")
STATE_FILE = "watcher.json"   # notices already acted on, so a restarted watcher never signals twice


# --- the trainer's side of the contract ----------------------------------------------------------------
def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # written atomically by the trainer, so this is someone else's partial file
        log.warning("%s is not valid JSON; ignoring it this round", path)
        return None


def _process_start_epoch(pid: int) -> float | None:
    """When `pid` started (Linux /proc), to tell a live trainer from a recycled pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat; the split drops pid and comm
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone as far as we are concerned
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def trainer_pids(run_dir: Path) -> list[int]:
    """Live trainer ranks from RUNDIR/pids/rank<N>.pid; stale files (dead or recycled pids) are skipped."""
    found = []
    for pid_file in sorted((run_dir / "pids").glob("rank*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            written = pid_file.stat().st_mtime
        except (OSError, ValueError):
            continue
        if pid <= 1 or pid == os.getpid() or not _alive(pid):
            continue
        started = _process_start_epoch(pid)
        if started is not None and started > written + 2.0:
            log.warning("%s names pid %d, which started after the file was written: not the trainer",
                        pid_file, pid)
            continue
        found.append(pid)
    return found


class Targets:
    """The processes the watcher may signal: explicit --pid values, or the trainer ranks of a run dir."""

    def __init__(self, run_dir: Path | None = None, pids: list[int] | None = None):
        if not run_dir and not pids:
            raise ValueError("the watcher needs --run-dir DIR (the trainer's run directory) or --pid PID")
        self.run_dir = Path(run_dir) if run_dir else None
        self.pids = list(pids or [])

    def live(self) -> list[int]:
        if self.pids:
            return [pid for pid in self.pids if _alive(pid)]
        return trainer_pids(self.run_dir)

    def trainer(self) -> dict | None:
        return read_json(self.run_dir / "trainer.json") if self.run_dir else None


def send(pids: list[int], sig: signal.Signals) -> list[int]:
    delivered = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            delivered.append(pid)
        except ProcessLookupError:
            log.info("pid %d exited before %s reached it", pid, sig.name)
        except PermissionError as exc:
            log.error("not allowed to signal pid %d (%s): run the watcher as the trainer's user or root",
                      pid, exc)
    return delivered


# --- recording -------------------------------------------------------------------------------------------
class Recorder:
    """Appends notice/rebalance events to the run records, or logs that recording is off."""

    def __init__(self, *, bucket: str | None, run: str | None, run_dir: Path | None):
        self.bucket, self.run, self.run_dir = bucket, run, run_dir
        self.shared = None   # RunRecords of the trainer's segment, once we wrote into it

    def _resolve(self) -> tuple[str | None, str | None]:
        bucket, run = self.bucket, self.run
        if (not bucket or not run) and self.run_dir:  # the bootstrap leaves the spec in the run dir
            spec = read_json(self.run_dir / "spec.json") or {}
            bucket, run = bucket or spec.get("bucket"), run or spec.get("run")
        return bucket, run

    def event(self, type_: str, trainer: dict | None, **fields) -> dict | None:
        bucket, run = self._resolve()
        if not run:
            log.warning("recording is off (no --run/--bucket and no spec.json in a run dir): %s %s",
                        type_, json.dumps(fields, default=str))
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        from job import layout
        from job.instance import identity
        from job.records import RunRecords

        ident = identity()
        # Join the trainer's segment when trainer.json names it; otherwise a segment of our own, so two
        # writers never rewrite the same S3 object.
        shared = (trainer or {}).get("segment")
        segment = shared or layout.segment_id(ident["instance_id"] + "-watcher")
        run_dir = self.run_dir or paths.run_dir(run)
        records = RunRecords(run_dir, run=run, segment=segment, bucket=bucket,
                             identity={k: ident[k] for k in ("instance_id", "instance_type", "az",
                                                             "price_per_hour")})
        try:
            record = records.event(type_, **fields)
        except (BotoCoreError, ClientError) as exc:
            # The line is in the local events.jsonl; the trainer's or agent's next flush cannot carry it
            # (other segment), so say where it is.
            log.error("could not upload the %s event to s3://%s (%s); it is kept in %s", type_, bucket, exc,
                      records.events_path)
            return None
        except OSError as exc:  # the local records file (disk full, permissions): the fields are in this log
            log.error("could not write the %s event to %s (%s): %s", type_, records.events_path, exc,
                      json.dumps(fields, default=str))
            return None
        self.shared = records if shared else None
        log.info("recorded %s event in run %s segment %s%s", type_, run, segment,
                 f" (s3://{bucket})" if bucket else " (local only: no bucket)")
        return record

    def reflush(self) -> None:
        """Upload the shared segment's events once more: the trainer's last upload may have raced ours."""
        if self.shared is not None:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self.shared.flush(force=True)
            except (BotoCoreError, ClientError) as exc:
                log.error("could not re-upload %s (%s); the local copy is complete", self.shared.events_path, exc)


# --- the watcher ------------------------------------------------------------------------------------------
class Watcher:
    def __init__(self, targets: Targets, recorder: Recorder, *, imds: IMDS | None = None,
                 interval: float = 5.0, rebalance_checkpoint: bool = True, max_backoff: float = 20.0,
                 max_wait: float = 150.0, after_notice: str = "exit"):
        self.targets, self.recorder = targets, recorder
        self.imds = imds or IMDS()
        self.interval = interval
        self.rebalance_checkpoint = rebalance_checkpoint
        self.max_backoff = max(interval, max_backoff)
        self.max_wait = max_wait
        self.after_notice = after_notice
        self.failures = 0
        self.handled: set[str] = set(self._load_state())

    # notices already acted on survive a restart of the watcher
    def _state_path(self) -> Path | None:
        return self.targets.run_dir / STATE_FILE if self.targets.run_dir else None

    def _load_state(self) -> list[str]:
        path = self._state_path()
        return (read_json(path) or {}).get("handled", []) if path else []

    def _mark(self, key: str) -> None:
        self.handled.add(key)
        path = self._state_path()
        if path:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"handled": sorted(self.handled)}))
            os.replace(tmp, path)

    def poll_once(self) -> str | None:
        """One round: returns 'notice' when a spot notice was handled, 'rebalance', or None."""
        notice = self.imds.spot_instance_action()
        if notice is not None:
            key = f"notice:{notice['action']}@{notice['time']}"
            if key not in self.handled:
                self.handle_notice(notice, key)
                return "notice"
            return None
        if self.rebalance_checkpoint:
            recommendation = self.imds.rebalance_recommendation()
            if recommendation is not None:
                key = f"rebalance@{recommendation['noticeTime']}"
                if key not in self.handled:
                    self.handle_rebalance(recommendation, key)
                    return "rebalance"
        return None

    def handle_notice(self, notice: dict, key: str) -> None:
        seen_at = time.time()
        try:
            action_at = parse_time(notice["time"])
        except (ValueError, TypeError, AttributeError):
            log.warning("cannot parse notice time %r; assuming two minutes from now", notice["time"])
            action_at = seen_at + 120
        deadline = min(action_at, seen_at + self.max_wait)
        log.warning("SPOT NOTICE: %s at %s (%.0f s from now); checkpointing the trainer",
                    notice["action"], notice["time"], action_at - seen_at)
        signalled: dict[int, float] = {}
        trainer = None
        while True:
            # Ranks that appear late (trainer just starting) are signalled as soon as they show up.
            fresh = [pid for pid in self.targets.live() if pid not in signalled]
            for pid in send(fresh, signal.SIGUSR1):
                signalled[pid] = time.time()
                log.info("SIGUSR1 -> pid %d (%.3f s after the notice was seen)", pid, signalled[pid] - seen_at)
                self._mark(key)  # before anything that could fail: a restarted watcher must not signal again
            trainer = self.targets.trainer()
            if signalled:
                first = min(signalled.values())
                durable = (trainer or {}).get("last_durable") or {}
                if (trainer or {}).get("state") in FINAL_TRAINER_STATES and durable.get("time", 0) >= first - 1:
                    break
                if not any(_alive(pid) for pid in signalled):
                    log.info("every signalled trainer process has exited")
                    break
            if time.time() >= deadline:
                log.error("the trainer did not report a durable checkpoint before %s", notice["time"])
                break
            time.sleep(0.2)
        trainer = trainer or {}
        durable = trainer.get("last_durable") or {}
        first = min(signalled.values()) if signalled else None
        fresh_durable = bool(first and durable.get("time", 0) >= first - 1)
        if not signalled:
            log.warning("no trainer process was found to signal (not started yet, or already gone)")
        self.recorder.event(
            "notice", trainer, action=notice["action"], notice_time=notice["time"], seen_at=seen_at,
            signalled_at=first, signalled_pids=sorted(signalled), trainer_state=trainer.get("state"),
            step=durable.get("global_step", trainer.get("global_step")), checkpoint_key=durable.get("key"),
            durable_after_notice=fresh_durable,
            notice_to_durable_s=(durable["time"] - seen_at) if fresh_durable else None)
        self._mark(key)
        if self.recorder.shared is not None:
            while any(_alive(pid) for pid in signalled) and time.time() < deadline:
                time.sleep(0.2)
            self.recorder.reflush()

    def handle_rebalance(self, recommendation: dict, key: str) -> None:
        pids = self.targets.live()
        log.warning("REBALANCE RECOMMENDATION at %s: early checkpoint of pids %s",
                    recommendation["noticeTime"], pids)
        delivered = send(pids, signal.SIGUSR2)
        self.recorder.event("rebalance", self.targets.trainer(), notice_time=recommendation["noticeTime"],
                            signalled_pids=delivered, step=(self.targets.trainer() or {}).get("global_step"))
        self._mark(key)

    def run(self, stop=None) -> int:
        """Poll until a notice was handled (and after_notice == 'exit') or `stop` (an Event) is set."""
        log.info("watching %s every %.1fs (metadata at %s; rebalance checkpoint %s)",
                 self.targets.run_dir or self.targets.pids, self.interval, self.imds.endpoint,
                 "on" if self.rebalance_checkpoint else "off")
        next_poll = time.monotonic()
        while stop is None or not stop.is_set():
            try:
                outcome = self.poll_once()
                self.failures = 0
                if outcome == "notice" and self.after_notice == "exit":
                    return 0
                next_poll += self.interval  # a fixed cadence: slow polls do not push the schedule back
            except IMDSError as exc:
                self.failures += 1
                delay = min(self.interval * 2 ** (self.failures - 1), self.max_backoff)
                log.warning("metadata poll failed (%d in a row): %s; next try in %.1fs", self.failures, exc, delay)
                next_poll = time.monotonic() + delay
            except Exception:  # noqa: BLE001 - a bug or an odd reply must not end the watch: the next notice counts
                self.failures += 1
                delay = min(self.interval * 2 ** (self.failures - 1), self.max_backoff)
                log.exception("watcher round failed unexpectedly (%d in a row); next try in %.1fs", self.failures,
                              delay)
                next_poll = time.monotonic() + delay
            next_poll = max(next_poll, time.monotonic())
            wait = max(0.0, next_poll - time.monotonic())
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
        return 0


def _default_interval() -> float:
    raw = os.environ.get("SPOT_WATCHER_INTERVAL", "5")
    try:
        return float(raw)
    except ValueError:
        sys.exit(f"SPOT_WATCHER_INTERVAL={raw!r} is not a number of seconds: unset it or set e.g. 5")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_argument_group("what to signal (one of)")
    target.add_argument("--run-dir", type=Path, help="the trainer's run directory (pids/, trainer.json)")
    target.add_argument("--pid", type=int, action="append", default=[], help="a process to signal (repeatable)")
    parser.add_argument("--bucket", help="run-records bucket (default: from RUN_DIR/spec.json)")
    parser.add_argument("--run", help="run name (default: from RUN_DIR/spec.json)")
    parser.add_argument("--interval", type=float, default=_default_interval(),
                        help="seconds between metadata polls (default: $SPOT_WATCHER_INTERVAL, else 5)")
    parser.add_argument("--rebalance-checkpoint", action=argparse.BooleanOptionalAction, default=True,
                        help="send SIGUSR2 (early checkpoint) on a rebalance recommendation")
    parser.add_argument("--max-backoff", type=float, default=20.0, help="longest wait after metadata errors")
    parser.add_argument("--after-notice", choices=("exit", "idle"), default="exit",
                        help="exit once a notice was handled, or keep polling (never re-signals it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s watcher %(levelname)s %(message)s")
    if args.interval <= 0:
        parser.error("--interval must be positive")
    if args.run_dir and args.pid:
        parser.error("give --run-dir or --pid, not both")
    if not args.run_dir and not args.pid:
        parser.error("give --run-dir DIR (the trainer's run directory) or --pid PID")
    if args.pid and not args.run:
        log.warning("no --run given: the watcher will signal pids %s but recording is off", args.pid)
    watcher = Watcher(Targets(args.run_dir, args.pid), Recorder(bucket=args.bucket, run=args.run, run_dir=args.run_dir),
                      interval=args.interval, rebalance_checkpoint=args.rebalance_checkpoint,
                      max_backoff=args.max_backoff, after_notice=args.after_notice)
    # systemd/tmux stop the watcher with SIGTERM: leave quietly, the trainer is not ours to touch.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return watcher.run()


if __name__ == "__main__":
    sys.exit(main())
