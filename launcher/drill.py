"""`launcher drill`: the whole chain on this machine, spot interruptions included, no AWS account needed.

On loopback only, and all torn down at the end (also on failure, Ctrl-C and SIGTERM):
  * a moto server for S3, SSM and EC2 (AWS_ENDPOINT_URL);
  * the local Hub serving the real-photo dataset in ImageNet's Hub layout, token-protected; the token reaches
    the instances only through SSM, where `launcher train` puts it;
  * two "instances": real sshd processes, each with its own empty data directory (SPOT_DATA_DIR), its own
    private tmux server (TMUX_TMPDIR) and its own metadata service (IMDSv2, with a control API for notices).

Then the same code path as on AWS: `launcher train` against instance A (the [ssh] override) pushes the job
package, runs the bootstrap, and the instance downloads → prepares → mirrors the dataset to S3 and trains with
torchrun (gloo, CPU, 2 processes) under the watcher. K times: a spot notice through IMDS → the watcher signals
the trainer → a checkpoint durable in S3 → the trainer exits → the instance is reclaimed; the Auto Scaling
group's part is played here: the other instance comes back as a fresh one (empty disk, new instance id) and
`launcher resume` bootstraps it, which restores the dataset and the checkpoint from S3 and resumes. Finally
the same spec trains uninterrupted as a reference run, the final weights are compared bit for bit, and the
results page is rendered from the run records into a local HTML file (the only thing the drill keeps).

    launcher drill [--interruptions K] [--model NAME] [--steps N] [--json] [--keep]
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from job import layout, paths
from launcher import progress
from launcher.errors import LauncherError

RUN = "drill"
REFERENCE_RUN = "drill-reference"
DATASET = "photos"
REPO_ID = "ILSVRC/imagenet-1k"         # the layout the local Hub serves is ImageNet's; the photos are not
# The launcher reads the Hub token from here. Not HF_TOKEN: job.download would take that from the environment
# before SSM, and the drill must prove the instances get it from SSM only.
TOKEN_ENV = "SPOT_DRILL_HF_TOKEN"

DEFAULT_INTERRUPTIONS = 3
DEFAULT_MODEL = "resnet18"
DEFAULT_STEPS = 96                     # 8 epochs: the page shows learning, and the notices fit
DEFAULT_RESOLUTION = 64
# The real-photo set: 10 classes x 40 train photos (396 after the corrupt quirk files are dropped) / 10 val.
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 40, 10
GLOBAL_BATCH = 32
FULL_EPOCH_STEPS = 12                  # 396 // 32: the drill never asks an epoch for more steps than this
NPROC = 2

# Two instance "slots" the group alternates between, as if spot capacity moved between types and AZs.
SLOTS = (("a", "g5.xlarge", "us-east-1a"), ("b", "g6.xlarge", "us-east-1b"))


class DrillError(LauncherError):
    """A step of the chain did not do what it must; the message says which and where to look."""


@dataclass(frozen=True)
class DrillOptions:
    interruptions: int = DEFAULT_INTERRUPTIONS
    model: str = DEFAULT_MODEL
    steps: int = DEFAULT_STEPS
    resolution: int = DEFAULT_RESOLUTION
    keep: bool = False
    results: Path | None = None        # where the results page goes; default under $SPOT_RESNET_HOME/drill
    segment_timeout_s: float = 900.0   # longest any one wait may take (training a segment included)


# ------------------------------------------------------------------------------------------ the training
def split_steps(steps: int) -> tuple[int, int]:
    """(epochs, steps per epoch) with epochs x steps per epoch >= steps, each epoch at most a full one."""
    if steps < 2:
        raise click.BadParameter(f"--steps {steps}: the drill needs at least 2 steps", param_hint="--steps")
    epochs = math.ceil(steps / FULL_EPOCH_STEPS)
    return epochs, math.ceil(steps / epochs)


def train_table(opts: DrillOptions) -> dict:
    """The run config's [train] table: the `fast` preset shrunk to CPU size (same code, smaller numbers)."""
    epochs, per_epoch = split_steps(opts.steps)
    return {"preset": "fast", "model": opts.model, "epochs": epochs, "steps_per_epoch": per_epoch,
            "warmup_epochs": min(1.0, epochs / 4), "global_batch": GLOBAL_BATCH,
            "max_micro_batch": GLOBAL_BATCH // NPROC, "lr": 0.1, "resolution": opts.resolution, "workers": 0,
            "log_every": 1, "eval_batch": 50,
            "checkpoint_every_min": 60, "keep_checkpoints": 2, "nproc_per_node": NPROC}


# The watcher polls the metadata service every WATCHER_POLL_S (5 s by default on AWS; 1 s here via
# SPOT_WATCHER_INTERVAL, so that a notice lands within a few of the drill's sub-second CPU steps), and the
# trainer stops at the step boundary after its signal: a notice may take this long to stop the trainer.
WATCHER_POLL_S = 1.0
NOTICE_SLACK_S = 2.0


def latency_steps(steps_per_s: float) -> int:
    """Steps the trainer may still take between a notice and its stop, at the measured speed (worst case)."""
    return math.ceil(steps_per_s * (WATCHER_POLL_S + NOTICE_SLACK_S)) + 1


def next_notice_step(resumed: int, total: int, remaining: int, latency: int) -> int:
    """Where to post the next of `remaining` notices: the steps left after room for every remaining notice's
    latency are split evenly, so each segment trains a while and the last notice still lands before the end."""
    room = total - resumed - remaining * latency
    return resumed + max(1, room // (remaining + 1))


# ------------------------------------------------------------------------------------------ processes
def processes_with_env(entry: str) -> list[int]:
    """PIDs of this user's processes started with environment entry `entry` ("NAME=value")."""
    needle, own, found = entry.encode(), os.getuid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != own:
                continue
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(name))
        except OSError:        # gone meanwhile, or not ours to read
            continue
    return found


def kill_processes(entry: str, timeout: float = 15.0) -> int:
    """SIGKILL every process started with `entry` until none is left (a dying agent may still spawn one)."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_with_env(entry)
        if not pids:
            return len(killed)
        if time.monotonic() > deadline:
            raise DrillError(f"processes {pids} (environment {entry}) survived SIGKILL for {timeout:.0f}s")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------ instances
class LocalInstance:
    """One stand-in instance: sshd on loopback, its data dir, private tmux and its own IMDS.

    `boot()` makes it a fresh instance (empty disk, new id) the way the Auto Scaling group's replacement
    would be; `reclaim()` ends every process that ran on it, as EC2 does two minutes after a notice.
    """

    def __init__(self, slot: str, instance_type: str, az: str, root: Path, shared_env: dict[str, str],
                 drill_id: str):
        from job.testing.imds_server import ImdsServer
        from launcher.testing.sshd import LocalSshd

        self.slot, self.instance_type, self.az, self.drill_id = slot, instance_type, az, drill_id
        self.boots = 0
        self.imds = ImdsServer(instance_id=self._new_id(), instance_type=instance_type, az=az)
        self._imds_serving = False
        data_dir = root / "data"
        self.sshd = LocalSshd(root=root, data_dir=data_dir, env={
            **shared_env, **self.imds.env,
            # a drill marker every process on this instance inherits (bootstrap passes SPOT_* into tmux), so
            # cleanup finds them all by environment, never by name
            "SPOT_DRILL_ID": drill_id, "HF_HOME": str(data_dir / "hf-home")})

    def _new_id(self) -> str:
        return f"i-0{self.drill_id[:6]}{self.slot}{self.boots:09x}"

    @property
    def name(self) -> str:
        return f"instance {self.slot.upper()}"

    @property
    def instance_id(self) -> str:
        return self.imds.state.instance_id

    @property
    def data_dir(self) -> Path:
        return self.sshd.data_dir

    def start(self) -> "LocalInstance":
        self.imds.start()
        self._imds_serving = True
        self.sshd.start()
        return self

    def boot(self) -> None:
        """A fresh instance in this slot: nothing left running, empty disk, no notice, a new instance id."""
        self.reclaim()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        self.boots += 1
        self.imds.control("clear")
        with self.imds.state.lock:   # the metadata service now describes the new instance
            self.imds.state.instance_id = self._new_id()

    def reclaim(self) -> int:
        """End every process of this instance (tmux server, agent, watcher, trainers)."""
        self.sshd.kill_tmux()
        return kill_processes(f"SPOT_DATA_DIR={self.data_dir}")

    def close(self) -> None:
        try:
            self.reclaim()
        finally:
            self.sshd.stop()
            if self._imds_serving:   # shutting down a server that never served would block forever
                self.imds.stop()

    def notice(self) -> float:
        """Post a spot interruption notice (visible at once); returns when it became visible."""
        posted = self.imds.schedule_notice(in_s=0)
        return float(posted["visible_at"])

    def sessions(self) -> list[str]:
        out = self.sshd.run_as_instance("tmux", "list-sessions", "-F", "#{session_name}", capture_output=True,
                                        text=True)
        return out.stdout.split() if out.returncode == 0 else []

    def trainer(self, run: str) -> dict:
        try:
            return json.loads((paths.run_dir(run, root=self.data_dir) / "trainer.json").read_text())
        except (OSError, ValueError):
            return {}

    def log_tail(self, run: str, lines: int = 25) -> str:
        path = paths.run_dir(run, root=self.data_dir) / "agent.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({path} does not exist)"

    def ssh_table(self) -> dict:
        """The run config's [ssh] table that reaches this instance (what skips instance discovery)."""
        return {"host": self.sshd.host, "port": self.sshd.port, "user": self.sshd.user,
                "key": str(self.sshd.key_path)}


# ------------------------------------------------------------------------------------------ run records
@dataclass
class Segment:
    """One trainer start on one instance, read back from the run records in S3."""

    name: str
    events: list[dict]
    metrics: list[dict]

    @property
    def start(self) -> float:
        return min(e["time"] for e in self.events)

    def states(self, state: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == "state" and e.get("state") == state]

    @property
    def resumed_from(self) -> int:
        resuming = self.states("resuming")
        return int(resuming[0]["global_step"]) if resuming else 0

    @property
    def steps(self) -> list[tuple[float, int]]:
        return [(m["time"], int(m["global_step"])) for m in self.metrics if m.get("type") == "step"]

    @property
    def first_step_time(self) -> float | None:
        steps = self.steps
        return min(t for t, _ in steps) if steps else None

    @property
    def stopped_at(self) -> int | None:
        interrupted = self.states("interrupted")
        return int(interrupted[-1]["global_step"]) if interrupted else None

    @property
    def finished_at(self) -> int | None:
        finished = self.states("finished")
        return int(finished[-1]["global_step"]) if finished else None


def read_segments(s3, bucket: str, run: str) -> list[Segment]:
    """The trainer segments of a run, oldest first (agent and watcher segments left out)."""
    from job.s3 import list_keys

    files: dict[str, dict[str, list[dict]]] = {}
    prefix = layout.records_prefix(run)
    for key in list_keys(s3, bucket, prefix):
        segment, _, name = key[len(prefix):].partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        files.setdefault(segment, {})[name] = [json.loads(line) for line in body.splitlines() if line.strip()]
    segments = [Segment(name, f.get("events.jsonl", []), f.get("metrics.jsonl", [])) for name, f in files.items()]
    trainers = [s for s in segments if s.events and (s.states("training") or s.states("resuming"))]
    return sorted(trainers, key=lambda s: s.start)


def training_wall_s(segments: list[Segment]) -> float | None:
    """First training step → finished, across all segments (the data step before it left out)."""
    first = segments[0].first_step_time if segments else None
    finished = [e["time"] for e in segments[-1].states("finished")] if segments else []
    return round(finished[-1] - first, 2) if first is not None and finished else None


@dataclass
class Interruption:
    """What the drill did for one notice (its own clock; the records supply the rest)."""

    instance: str
    instance_id: str
    noticed_at: float
    replacement: str = ""
    replacement_id: str = ""
    replaced_at: float = 0.0


def analyse(segments: list[Segment], interruptions: list[Interruption],
            steps_per_epoch: int) -> tuple[list[dict], list[str]]:
    """Per interruption: steps before the notice, checkpoint, resume point, lost steps, timings; plus problems."""
    rows, problems = [], []
    if len(segments) != len(interruptions) + 1:
        problems.append(f"expected {len(interruptions) + 1} trainer segments in the run records, found "
                        f"{len(segments)}: {[s.name for s in segments]}")
        return rows, problems
    for i, (done, seg, nxt) in enumerate(zip(interruptions, segments, segments[1:]), start=1):
        before = [g for t, g in seg.steps if t <= done.noticed_at]
        computed = max(before) if before else seg.resumed_from
        stopped, resumed = seg.stopped_at, nxt.resumed_from
        if stopped is None:
            problems.append(f"interruption {i}: segment {seg.name} has no 'interrupted' state")
            stopped = computed
        if resumed != stopped:
            problems.append(f"interruption {i}: resumed from step {resumed}, not the notice checkpoint's {stopped}")
        durable = sorted(e["time"] for e in seg.events if e.get("type") == "checkpoint" and "key" in e
                         and int(e.get("global_step", -1)) == stopped and e["time"] >= done.noticed_at)
        stop_event = seg.states("interrupted")
        durable_at = durable[0] if durable else (stop_event[-1]["time"] if stop_event else None)
        first = nxt.first_step_time
        rows.append({
            "instance": done.instance, "instance_id": done.instance_id,
            "replacement": done.replacement, "replacement_id": done.replacement_id,
            "steps_before_notice": computed, "checkpoint_step": stopped, "resumed_from": resumed,
            "mid_epoch": stopped % steps_per_epoch != 0, "lost_steps": max(0, computed - resumed),
            "notice_to_durable_s": round(durable_at - done.noticed_at, 3) if durable_at else None,
            "resume_s": round(first - done.replaced_at, 3) if first else None,
        })
        if durable_at is None:
            problems.append(f"interruption {i}: no durable checkpoint recorded after the notice")
        if not any(e.get("type") == "notice" and e.get("durable_after_notice") for e in seg.events):
            problems.append(f"interruption {i}: the watcher recorded no notice with a durable checkpoint in "
                            f"segment {seg.name}")
        if first is None:
            problems.append(f"interruption {i}: the replacement never recorded a training step")
    return rows, problems


def compare_final_weights(s3, bucket: str, run: str, reference: str, workdir: Path) -> dict:
    """Download both runs' latest checkpoints and compare every model tensor exactly (torch, imported here
    only: the launcher itself never loads it)."""
    import torch

    from job.s3 import get_json

    tensors = {}
    for name in (run, reference):
        pointer = get_json(s3, bucket, layout.latest_checkpoint_key(name))
        if pointer is None:
            raise DrillError(f"run {name} has no {layout.latest_checkpoint_key(name)} in the bucket")
        path = workdir / f"{name}.pt"
        s3.download_file(bucket, pointer["key"], str(path))
        state = torch.load(path, map_location="cpu", weights_only=False)
        tensors[name] = (int(state["global_step"]), state["model"])
        path.unlink()
    (step_a, a), (step_b, b) = tensors[run], tensors[reference]
    differing = sorted(k for k in set(a) | set(b) if k not in a or k not in b or not torch.equal(a[k], b[k]))
    return {"match": step_a == step_b and not differing, "global_step": step_a, "reference_global_step": step_b,
            "tensors": len(a), "differing_tensors": differing[:10]}


# ------------------------------------------------------------------------------------------ the drill
@contextmanager
def _handling(signals, handler):
    """Route `signals` to `handler` for the block, then give back the previous handlers."""
    saved = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def _stop_signals_raise():
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the same cleanup runs."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    return _handling((signal.SIGTERM, signal.SIGHUP), interrupt)


def _shielded():
    """Cleanup must finish: further Ctrl-C / SIGTERM only say so."""
    def wait(_signum, _frame):
        progress.warn("cleaning up the drill's processes and files; one moment")

    return _handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), wait)


@contextmanager
def _environ(values: dict[str, str]):
    """This process's boto3 and launcher API see the drill's endpoints for the duration, and nothing that could
    lead them to a real AWS account (a profile, a per-service endpoint)."""
    from job import s3
    from job.testing.processes import scoped_environ

    hide = [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_") or k in ("AWS_PROFILE", "AWS_CONFIG_FILE",
                                                                                 "AWS_SHARED_CREDENTIALS_FILE")]
    with scoped_environ(values, hide=hide):
        s3._session.cache_clear()
        try:
            yield
        finally:
            s3._session.cache_clear()


def default_results_path() -> Path:
    root = Path(os.environ.get("SPOT_RESNET_HOME", Path.home() / ".cache" / "spot-resnet"))
    return root / "drill" / f"results-{time.strftime('%Y%m%d-%H%M%S')}.html"


class Drill:
    def __init__(self, opts: DrillOptions, stack: ExitStack):
        self.opts, self.stack = opts, stack
        self.results_path = Path(opts.results) if opts.results else default_results_path()
        self.drill_id = uuid.uuid4().hex
        self.train = train_table(opts)
        self.total_steps = self.train["epochs"] * self.train["steps_per_epoch"]
        self.interruptions: list[Interruption] = []
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()

    # --- set-up --------------------------------------------------------------------------------------
    def _phase(self, message: str) -> float:
        progress.step(f"[{time.monotonic() - self.started:5.0f}s] {message}")
        return time.monotonic()

    def _done(self, name: str, since: float, message: str) -> None:
        self.timings[name] = round(time.monotonic() - since, 2)
        progress.done(f"{message} [dim]({self.timings[name]:.1f}s)[/]")

    def setup(self) -> None:
        from job.testing.hub_server import HubServer
        from job.testing.moto_server import MotoServer
        from job.testing.photos import make_hub_dataset

        since = self._phase("starting the stand-ins on loopback: moto (S3, SSM, EC2), the Hub, two instances")
        # Short names: tmux socket paths must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="spot-drill-"))
        if self.opts.keep:
            self.stack.callback(progress.info, f"kept the drill's files in {self.root}")
        else:
            self.stack.callback(shutil.rmtree, self.root, ignore_errors=True)
        self.moto = MotoServer()
        self.stack.callback(self.moto.stop)
        self.moto.start()
        self.token = "hf_drill" + secrets.token_hex(16)
        hub_root = self.root / "hub"
        summary = make_hub_dataset(hub_root, num_classes=CLASSES, train_per_class=TRAIN_PER_CLASS,
                                   val_per_class=VAL_PER_CLASS, seed=0)
        self.hub = HubServer(hub_root, REPO_ID, token=self.token)
        self.hub.start()
        self.stack.callback(self.hub.stop)   # after start: stopping a server that never served would block
        # What this process's launcher API needs: the AWS endpoint, the scratch dir, the token to put in SSM.
        self.stack.enter_context(_environ({**self.moto.env, "SPOT_RESNET_HOME": str(self.root / "laptop"),
                                           TOKEN_ENV: self.token}))
        shared = {**self.moto.env, "HF_ENDPOINT": self.hub.url, "SPOT_WATCHER_SYSTEMD": "0",
                  "SPOT_WATCHER_INTERVAL": str(WATCHER_POLL_S),
                  "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
        self.instances = []
        for slot, instance_type, az in SLOTS:
            instance = LocalInstance(slot, instance_type, az, self.root / slot, shared, self.drill_id)
            self.stack.callback(instance.close)
            self.instances.append(instance.start())
        # Belt and braces: anything that escaped an instance's reclaim (the marker is drill-wide).
        self.stack.callback(kill_processes, f"SPOT_DRILL_ID={self.drill_id}")
        from job import s3

        self.s3 = s3.client("s3")
        self.bucket = f"spot-drill-{self.drill_id[:12]}"
        self.s3.create_bucket(Bucket=self.bucket)   # `launcher up` makes it on AWS
        self._done("setup", since, f"moto {self.moto.url}, Hub {self.hub.url} ({summary['counts']['train']} train / "
                   f"{summary['counts']['validation']} val real photos, token required), "
                   + ", ".join(f"{i.name} ssh {i.sshd.host}:{i.sshd.port} ({i.instance_type}, {i.az})"
                               for i in self.instances))

    def config(self, instance: LocalInstance, run: str):
        from launcher.config import parse

        return parse({"name": run, "region": "us-east-1", "instance_types": [s[1] for s in SLOTS],
                      "dataset": {"repo_id": REPO_ID, "name": DATASET, "hf_token_env": TOKEN_ENV},
                      "train": dict(self.train), "bucket": {"name": self.bucket}, "ssh": instance.ssh_table()})

    # --- waiting -------------------------------------------------------------------------------------
    def _describe(self, instance: LocalInstance, run: str) -> str:
        t = instance.trainer(run)
        if not t:
            return f"{instance.name}: preparing (data step, lease, torchrun start)"
        return (f"{instance.name}: {t.get('state')} step {t.get('global_step')}/{self.total_steps} "
                f"epoch {t.get('epoch')}")

    def _wait(self, instance: LocalInstance, run: str, what: str, probe, *, allow_end: bool = False):
        """Poll `probe` until truthy; fail fast (with the agent's log) when the run's tmux session ended."""
        def check():
            value = probe()
            if value:
                return value
            state = instance.trainer(run).get("state")
            if state == "failed" or (not allow_end and paths.tmux_session(run) not in instance.sessions()):
                raise DrillError(f"{what}: the run on {instance.name} ended (trainer state {state!r}). "
                                 f"Last lines of its agent.log:\n{instance.log_tail(run)}")
            return None

        return progress.wait_until(check, what=what, timeout=self.opts.segment_timeout_s, interval=0.5,
                                   describe=lambda: self._describe(instance, run))

    def _wait_session_end(self, instance: LocalInstance, run: str) -> None:
        progress.wait_until(lambda: paths.tmux_session(run) not in instance.sessions(),
                            what=f"the agent on {instance.name} to release the lease and exit", timeout=120,
                            interval=0.5)

    # --- the chain -----------------------------------------------------------------------------------
    def launch(self) -> LocalInstance:
        from launcher.commands.train import train

        first = self.instances[0]
        since = self._phase(f"launcher train → {first.name} ({first.instance_id}): package, spec and Hub token "
                            "to S3/SSM, push over SSH, bootstrap")
        result = train(self.config(first, RUN))
        if result["bootstrap"].get("action") != "started":
            raise DrillError(f"the bootstrap on {first.name} did not start the run: {result['bootstrap']}")
        self._done("launch", since, f"run {RUN} started in tmux on {first.name}")
        since = self._phase("download from the Hub → prepare → mirror to S3 → torchrun (2 processes)")
        self._wait(first, RUN, "the first training step", lambda: first.trainer(RUN).get("global_step", 0) >= 1)
        self._done("first_step", since, "training")
        return first

    def measure_speed(self, instance: LocalInstance, window_s: float = 3.0) -> float:
        """Training steps per second of the running trainer (from trainer.json's step and write time)."""
        first = instance.trainer(RUN)

        def measured_or_over(t: dict) -> bool:
            return t.get("state") in ("finished", "interrupted") or (
                t.get("global_step", 0) >= first.get("global_step", 0) + 3
                and t.get("updated", 0) >= first.get("updated", 0) + window_s)

        self._wait(instance, RUN, "a few steps to measure the training speed",
                   lambda: measured_or_over(instance.trainer(RUN)), allow_end=True)
        last = instance.trainer(RUN)
        if last.get("state") in ("finished", "interrupted"):
            # A fast machine can finish a short run before a single notice could be placed.
            needed = max(2 * self.total_steps, 4 * (self.opts.interruptions + 1))
            raise DrillError(f"the run reached state {last.get('state')!r} at step {last.get('global_step')} before "
                             f"{self.opts.interruptions} notice(s) could be placed: use --steps {needed} or more "
                             "(or fewer --interruptions)")
        speed = (last["global_step"] - first["global_step"]) / max(1e-3, last["updated"] - first["updated"])
        progress.info(f"training at {speed:.2f} steps/s: a notice may take up to {latency_steps(speed)} steps to stop "
                      f"the trainer (watcher polls every {WATCHER_POLL_S:.0f}s)")
        return speed

    def interrupt(self, number: int, current: LocalInstance, target: int) -> tuple[LocalInstance, int]:
        """Notice → durable checkpoint → reclaim → replacement; returns it and the steps the stop took."""
        self._phase(f"interruption {number}/{self.opts.interruptions}: letting {current.name} reach step {target}")
        self._wait(current, RUN, f"step {target}", lambda: current.trainer(RUN).get("global_step", 0) >= target)
        noticed_at = current.notice()
        at_step = current.trainer(RUN).get("global_step", 0)
        record = Interruption(current.name, current.instance_id, noticed_at)
        self.interruptions.append(record)
        progress.warn(f"spot notice posted to {current.name}'s metadata service at step {at_step}")
        self._wait(current, RUN, "the trainer to checkpoint to S3 and stop",
                   lambda: current.trainer(RUN).get("state") in ("interrupted", "finished"), allow_end=True)
        trainer = current.trainer(RUN)
        if trainer.get("state") != "interrupted":
            raise DrillError(f"the trainer on {current.name} ended {trainer.get('state')!r} instead of stopping on "
                             f"the notice (step {trainer.get('global_step')} of {self.total_steps}): use more --steps")
        durable = trainer.get("last_durable") or {}
        progress.done(f"checkpoint of step {durable.get('global_step')} durable in S3 "
                      f"{durable.get('time', noticed_at) - noticed_at:.1f}s after the notice")
        self._wait_session_end(current, RUN)
        current.reclaim()   # EC2 terminates the instance at the notice's action time
        replacement = next(i for i in self.instances if i is not current)
        return self.replace(record, replacement), int(durable.get("global_step", at_step)) - at_step

    def replace(self, record: Interruption, instance: LocalInstance) -> LocalInstance:
        from launcher.commands.resume import resume

        record.replaced_at = time.time()
        since = time.monotonic()
        instance.boot()
        record.replacement, record.replacement_id = instance.name, instance.instance_id
        self._phase(f"replacement: {instance.name} boots fresh ({instance.instance_id}, empty disk); "
                    "launcher resume → bootstrap → restore dataset + checkpoint from S3")
        result = resume(self.config(instance, RUN))
        if result["bootstrap"].get("action") != "started":
            raise DrillError(f"the bootstrap on {instance.name} did not resume the run: {result['bootstrap']}")
        resumed_from = (self.s3_latest(RUN) or {}).get("global_step", 0)
        self._wait(instance, RUN, "the first resumed step",
                   lambda: instance.trainer(RUN).get("global_step", 0) > resumed_from)
        progress.done(f"resumed on {instance.name} from step {resumed_from} "
                      f"{time.monotonic() - since:.1f}s after the replacement started")
        return instance

    def s3_latest(self, run: str) -> dict | None:
        from job.s3 import get_json

        return get_json(self.s3, self.bucket, layout.latest_checkpoint_key(run))

    def finish(self, instance: LocalInstance, run: str, phase: str) -> None:
        since = self._phase(phase)
        self._wait(instance, run, f"run {run} to finish", lambda: instance.trainer(run).get("state") == "finished",
                   allow_end=True)
        self._wait_session_end(instance, run)
        self._done(f"finish_{run}", since, f"run {run} finished at step {instance.trainer(run).get('global_step')}")

    def reference(self, instance: LocalInstance) -> None:
        """The same spec and the very same job package (copied in S3, so a tree edited meanwhile cannot differ),
        under another run name, started by the resume path, never interrupted."""
        from job.runspec import RunSpec
        from launcher.commands.resume import resume

        since = self._phase(f"reference: the same spec and package uninterrupted as run {REFERENCE_RUN} "
                            f"on {instance.name}")
        spec = RunSpec.fetch(self.s3, self.bucket, RUN)
        spec.run = REFERENCE_RUN
        spec.upload(self.s3)
        self.s3.copy_object(Bucket=self.bucket, Key=layout.package_key(REFERENCE_RUN),
                            CopySource={"Bucket": self.bucket, "Key": layout.package_key(RUN)})
        result = resume(self.config(instance, REFERENCE_RUN))
        if result["bootstrap"].get("action") != "started":
            raise DrillError(f"the reference run did not start: {result['bootstrap']}")
        self.timings["reference_launch"] = round(time.monotonic() - since, 2)
        self.finish(instance, REFERENCE_RUN, f"training {REFERENCE_RUN} ({self.total_steps} steps)")

    def render_page(self) -> Path:
        from infra.results_site.runtime.static import render_static

        since = self._phase("rendering the results page from the run records")
        path = render_static(self.s3, self.bucket, RUN, self.results_path)
        self._done("results_page", since, f"results page: {path}")
        return path

    def run(self) -> dict:
        self.setup()
        current = self.launch()
        per_epoch = self.train["steps_per_epoch"]
        latency = latency_steps(self.measure_speed(current)) if self.opts.interruptions else 0
        for number in range(1, self.opts.interruptions + 1):
            remaining = self.opts.interruptions - number + 1
            position = current.trainer(RUN).get("global_step", 0)
            if self.total_steps - position - remaining * latency < remaining + 1:
                needed = position + remaining * (latency + 2) + 2
                raise DrillError(f"at this speed the trainer may take {latency} steps between a notice and its stop, "
                                 f"so {remaining} more notice(s) do not fit in the {self.total_steps - position} "
                                 f"steps left: use --steps {needed} or more (or fewer --interruptions)")
            target = next_notice_step(position, self.total_steps, remaining, latency)
            current, stop_latency = self.interrupt(number, current, target)
            latency = max(latency, stop_latency)
        self.finish(current, RUN, f"training to the end on {current.name}")
        self.reference(current)
        since = self._phase("comparing the final weights with the uninterrupted reference")
        weights = compare_final_weights(self.s3, self.bucket, RUN, REFERENCE_RUN, self.root)
        self._done("compare", since, "weights bit-identical" if weights["match"] else
                   f"weights DIFFER: {weights['differing_tensors']}")
        segments = read_segments(self.s3, self.bucket, RUN)
        rows, problems = analyse(segments, self.interruptions, per_epoch)
        wall = {"interrupted": training_wall_s(segments),
                "uninterrupted": training_wall_s(read_segments(self.s3, self.bucket, REFERENCE_RUN))}
        page = self.render_page()
        finished = segments[-1].finished_at if segments else None
        lost = sum(r["lost_steps"] for r in rows)
        if finished != self.total_steps:
            problems.append(f"the run's records end at step {finished}, not {self.total_steps}")
        ok = (not problems and weights["match"] and lost == 0 and len(rows) == self.opts.interruptions)
        return {
            "ok": ok, "interruptions": len(rows), "lost_steps": lost,
            "weights_match_uninterrupted": weights["match"],
            "notice_to_durable_s": [r["notice_to_durable_s"] for r in rows],
            "resume_s": [r["resume_s"] for r in rows],
            "steps_total": finished or 0, "results_page": str(page),
            "model": self.opts.model, "resolution": self.opts.resolution, "world_size": NPROC,
            "watcher_poll_s": WATCHER_POLL_S,
            "epochs": self.train["epochs"], "steps_per_epoch": per_epoch,
            "training_wall_s": wall,
            # what each interruption cost in wall time (checkpoint, reclaim, replacement boot, restore, resume)
            "interruption_overhead_s": (round((wall["interrupted"] - wall["uninterrupted"]) / len(rows), 2)
                                        if rows and None not in wall.values() else None),
            "details": rows, "weights": weights, "problems": problems, "timings_s": self.timings,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            **({"workdir": str(self.root)} if self.opts.keep else {}),
        }


def run_drill(opts: DrillOptions) -> dict:
    """Run the drill; every process and temporary directory is gone when this returns or raises."""
    if opts.interruptions < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--interruptions")
    from job import recipes

    if opts.model not in recipes.MODELS:
        raise click.BadParameter(f"{opts.model!r} is not one of the trainer's models: {', '.join(recipes.MODELS)}",
                                 param_hint="--model")
    epochs, per_epoch = split_steps(opts.steps)
    if opts.interruptions and epochs * per_epoch < 4 * (opts.interruptions + 1):
        raise click.BadParameter(f"{opts.steps} steps leave too little room for {opts.interruptions} notices: "
                                 f"use --steps {4 * (opts.interruptions + 1)} or more", param_hint="--steps")
    from launcher.testing.sshd import SSHD

    missing = [what for what, found in ((f"openssh-server ({SSHD})", os.path.exists(SSHD)),
                                        ("tmux", shutil.which("tmux"))) if not found]
    if missing:
        raise DrillError(f"the drill's local instances need {' and '.join(missing)}: run `make setup` "
                         "(or apt-get install openssh-server tmux)")
    stack = ExitStack()
    try:
        with _stop_signals_raise():
            return Drill(opts, stack).run()
    finally:
        with _shielded():
            stack.close()


# ------------------------------------------------------------------------------------------ output
def summary_table(result: dict):
    from rich import box
    from rich.table import Table

    table = Table(title=f"drill: {'OK' if result['ok'] else 'FAILED'}", box=box.SIMPLE_HEAD, pad_edge=False,
                  title_style="bold green" if result["ok"] else "bold red",
                  caption="durable: notice → checkpoint verified in S3; resume: replacement boot → first resumed "
                          "step")
    for column in ("#", "instances", "notice at", "checkpoint", "resumed", "lost", "durable", "resume"):
        table.add_column(column, justify="left" if column == "instances" else "right", no_wrap=True)
    for n, row in enumerate(result["details"], start=1):
        moved = f"{row['instance'].split()[-1]} → {row['replacement'].split()[-1]}"
        checkpoint = f"{row['checkpoint_step']} ({'mid-epoch' if row['mid_epoch'] else 'epoch end'})"
        table.add_row(str(n), moved, f"step {row['steps_before_notice']}", checkpoint, str(row["resumed_from"]),
                      str(row["lost_steps"]), _seconds(row["notice_to_durable_s"]), _seconds(row["resume_s"]))
    return table


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.1f}s"


def print_summary(result: dict) -> None:
    console = progress.console()
    if "details" not in result:          # it stopped before the chain completed: the error says where
        console.print(f"[bold red]drill FAILED[/] after {result.get('elapsed_s')}s: {result.get('error')}")
        return
    console.print(summary_table(result))
    weights, wall = result.get("weights") or {}, result["training_wall_s"]
    lines = [
        f"model {result.get('model')} at {result.get('resolution')} px, {result.get('world_size')} processes, "
        f"{result.get('epochs')} epochs x {result.get('steps_per_epoch')} steps = {result.get('steps_total')} steps",
        f"interruptions {result['interruptions']}, lost steps {result['lost_steps']}, wall time per interruption "
        f"{_seconds(result.get('interruption_overhead_s'))} (training {_seconds(wall['interrupted'])} vs "
        f"{_seconds(wall['uninterrupted'])} uninterrupted)",
        "final weights " + ("bit-identical to the uninterrupted run" if result["weights_match_uninterrupted"]
                            else f"DIFFER from the uninterrupted run {weights.get('differing_tensors', '')}"),
        f"results page {result.get('results_page')}",
        f"took {result.get('elapsed_s')}s",
    ]
    for problem in result.get("problems", []):
        lines.append(f"[red]problem:[/] {problem}")
    if result.get("error"):
        lines.append(f"[red]error:[/] {result['error']}")
    for line in lines:
        console.print(line)


def failed_result(opts: DrillOptions, error: str, started: float) -> dict:
    return {"ok": False, "interruptions": 0, "lost_steps": 0, "weights_match_uninterrupted": False,
            "notice_to_durable_s": [], "resume_s": [], "steps_total": 0, "results_page": None,
            "model": opts.model, "error": error, "elapsed_s": round(time.monotonic() - started, 1)}


@click.command(name="drill", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--interruptions", "-k", default=DEFAULT_INTERRUPTIONS, show_default=True, type=int,
              help="spot notices to inject; each one is followed by a replacement instance")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="the trainer's model (resnet50 works too)")
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int,
              help=f"global steps to train (whole epochs of at most {FULL_EPOCH_STEPS} steps)")
@click.option("--resolution", default=DEFAULT_RESOLUTION, show_default=True, type=int, help="image size (px)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout (progress stays on stderr)")
@click.option("--keep", is_flag=True, help="keep the drill's temporary files (instances' disks, logs) for a look")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="where to write the results page [default: $SPOT_RESNET_HOME/drill/results-<time>.html]")
def drill_command(interruptions, model, steps, resolution, as_json, keep, results):
    """The whole chain on this machine, interruptions included (no AWS account needed)."""
    opts = DrillOptions(interruptions=interruptions, model=model, steps=steps, resolution=resolution, keep=keep,
                        results=results)
    started = time.monotonic()
    try:
        result = run_drill(opts)
    except click.ClickException:
        raise
    except (LauncherError, TimeoutError) as exc:
        result = failed_result(opts, str(exc), started)
    except Exception as exc:  # noqa: BLE001 - a bug in a piece: show where, and still answer (ok: false)
        progress.console().print_exception()
        result = failed_result(opts, f"{type(exc).__name__}: {exc}", started)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        print_summary(result)
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `launcher drill` (launcher/cli.py passes its arguments here)."""
    try:
        return drill_command.main(args=list(argv or []), prog_name="launcher drill", standalone_mode=False)
    except click.exceptions.Exit as exc:     # --help
        return exc.exit_code
    except click.exceptions.Abort:          # Ctrl-C: everything is already cleaned up
        progress.warn("drill interrupted: its processes and temporary files are gone")
        return 130
    except click.ClickException as exc:     # bad option: click's message names it
        exc.show()
        return exc.exit_code
