"""The trainer: DDP training that a spot reclaim never costs more than the current step.

    torchrun --nproc_per_node N -m job.train --spec SPEC.json --data PREPARED --run-dir RUNDIR [--max-steps N]

Everything that defines the trajectory comes from the run spec's `train` dict (job/recipes.py): the global
batch, the LR per global step, the data order (job/loader.py: a function of seed, epoch and step). The
machine only decides how a global step is split: W processes × A accumulation micro-steps
(job.distributed.micro_batching), so a relaunch on a type with another GPU count continues the same run.

Signals (docs/CONTRACTS.md): SIGUSR1/SIGTERM → checkpoint at the next step boundary, wait until it is
durable in S3, state `interrupted`, exit 0; SIGUSR2 → checkpoint at the next step boundary, keep going.
Handlers only set a flag; the ranks agree on it with an all-reduce(MAX) after every step, so a signal to
any one rank stops all of them at the same step.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from job import checkpoint, distributed, layout, recipes
from job.models import build_model, param_groups
from job.records import RunRecords
from job.runspec import RunSpec

log = logging.getLogger("job.train")

EXIT_NOT_DURABLE = 3   # interrupted, but the last checkpoint stayed local (S3 unreachable)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m job.train", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path, help="run spec JSON (job/runspec.py)")
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset directory (job/prepare.py)")
    parser.add_argument("--run-dir", required=True, type=Path, help="local run directory (job/paths.run_dir)")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="tests only: stop with a checkpoint (state interrupted) after this global step")
    return parser.parse_args(argv)


def instance_identity(spec: RunSpec) -> dict:
    """The one place the trainer asks who it runs on (IMDS, else SPOT_* env, else 'local')."""
    from job.instance import identity

    return identity(spec)


# --- small pieces ----------------------------------------------------------------------------------------
class Signals:
    """Flags set by signal handlers (stop holds the signal number); read at step boundaries."""

    def __init__(self):
        self.stop = 0
        self.checkpoint = 0

    def install(self) -> None:
        def on_stop(signum, _frame):
            self.stop = int(signum)

        def on_checkpoint(_signum, _frame):
            self.checkpoint = 1

        signal.signal(signal.SIGUSR1, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGUSR2, on_checkpoint)


class StatusFile:
    """RUNDIR/trainer.json, rewritten atomically (rank 0 only); thread-safe (uploads report from a thread)."""

    def __init__(self, path: Path, **fixed):
        self.path = path
        self.value = {"pid": os.getpid(), "state": "starting", "global_step": 0, "epoch": 0, "last_durable": None,
                      **fixed}
        self._lock = threading.Lock()
        self._last_write = 0.0

    def update(self, force: bool = True, **fields) -> None:
        with self._lock:
            self.value.update(fields)
            now = time.monotonic()
            if not force and now - self._last_write < 1.0:
                return
            self._last_write = now
            self.value["updated"] = time.time()
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(self.value, sort_keys=True))
            os.replace(tmp, self.path)


def amp_settings(mode: str, device: torch.device) -> tuple[bool, torch.dtype | None, bool]:
    """(autocast enabled, dtype, use GradScaler): bf16 where the GPU has it natively, fp16 + scaler on T4."""
    if device.type != "cuda" or mode == "off":
        return False, None, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported(including_emulation=False)):
        return True, torch.bfloat16, False
    return True, torch.float16, True


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])


def _mixer(cfg: recipes.TrainConfig, num_classes: int):
    """torchvision's MixUp / CutMix (one of them per micro-batch), or None."""
    from torchvision.transforms import v2

    choices = []
    if cfg.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    return v2.RandomChoice(choices) if choices else None


# --- the trainer ----------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: recipes.TrainConfig, spec: RunSpec, data_dir: Path, run_dir: Path,
                 ctx: distributed.DistContext, signals: Signals, max_steps: int = 0):
        from job import loader as loaders

        self.cfg, self.spec, self.data_dir, self.run_dir, self.ctx = cfg, spec, data_dir, run_dir, ctx
        self.max_steps = max_steps
        self.device = ctx.device
        self.signals = signals
        self.accum, self.micro_batch = distributed.micro_batching(cfg.global_batch, ctx.world_size,
                                                                  cfg.max_micro_batch)
        self.autocast, self.amp_dtype, use_scaler = amp_settings(cfg.amp, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)  # same initial weights on every rank and every attempt

        self.num_classes = loaders.num_classes(data_dir)
        model = build_model(cfg.model, self.num_classes).to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module = model
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward = torch.compile(self.ddp) if cfg.compile else self.ddp
        self.optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.decay_bn_and_bias),
                                         lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.mixer = _mixer(cfg, self.num_classes)

        self.train_loader = loaders.TrainLoader(
            data_dir, "train", global_batch=cfg.global_batch, rank=ctx.rank, world_size=ctx.world_size,
            accum=self.accum, seed=cfg.seed, workers=cfg.workers, device=self.device)
        self.eval_loader = loaders.EvalLoader(
            data_dir, "validation", batch_size=cfg.eval_batch, rank=ctx.rank, world_size=ctx.world_size,
            resolution=cfg.eval_resolution, resize=cfg.eval_resize, workers=cfg.workers, device=self.device)
        full = len(self.train_loader)
        self.steps_per_epoch = min(full, cfg.steps_per_epoch) if cfg.steps_per_epoch > 0 else full
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: recipes.lr_factor(cfg, step, self.steps_per_epoch))

        self.epoch = self.step_in_epoch = self.global_step = 0
        self.history: list[dict] = []
        self.epoch_loss = torch.zeros((), device=self.device, dtype=torch.float64)  # this rank's sum of step losses
        self.epoch_elapsed_before = 0.0      # seconds of this epoch spent before a resume
        self.stop_reason = ""
        self.records = self.status = self.store = None
        if ctx.is_main:
            self._open_records()

    # --- bookkeeping (rank 0) ---------------------------------------------------------------------------
    def _open_records(self) -> None:
        ident = instance_identity(self.spec)
        self.identity = ident
        segment = layout.segment_id(ident["instance_id"])
        self.records = RunRecords(self.run_dir, run=self.spec.run, segment=segment, identity=ident,
                                  bucket=self.spec.bucket)
        self.status = StatusFile(self.run_dir / "trainer.json", run=self.spec.run, segment=segment,
                                 world_size=self.ctx.world_size, accum=self.accum, micro_batch=self.micro_batch)
        self.status.update()
        self.store = checkpoint.CheckpointStore(
            self.run_dir / "checkpoints", run=self.spec.run, bucket=self.spec.bucket, keep=self.cfg.keep_checkpoints,
            on_durable=self._on_durable, on_upload_error=self._on_upload_error)

    def _on_durable(self, durable: checkpoint.Durable) -> None:
        self.status.update(last_durable={"key": durable.key, "global_step": durable.global_step,
                                         "time": durable.time})
        self.records.event("checkpoint", key=durable.key, global_step=durable.global_step, epoch=durable.epoch,
                           size=durable.size, seconds=round(sum(v for k, v in durable.timings.items()
                                                               if k.endswith("_s")), 3),
                           **{k: round(v, 3) for k, v in durable.timings.items()})

    def _on_upload_error(self, global_step: int, message: str) -> None:
        self.records.event("checkpoint", global_step=global_step, error=message)

    # --- checkpoint state ---------------------------------------------------------------------------------
    def _state(self) -> dict | None:
        """Collective: every rank contributes its RNG state and loss sum; rank 0 gets the full state."""
        local = {"rng": rng_state(), "epoch_loss": float(self.epoch_loss)}
        gathered = distributed.gather_objects(self.ctx, local)
        if not self.ctx.is_main:
            return None
        elapsed = self.epoch_elapsed_before + (time.time() - self.epoch_started)
        return {
            "format": 1,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "loader": {"seed": self.cfg.seed, "epoch": self.epoch, "start_step": self.step_in_epoch,
                       "steps_per_epoch": self.steps_per_epoch, "global_batch": self.cfg.global_batch},
            "rng": [g["rng"] for g in gathered],
            "world_size": self.ctx.world_size, "accum": self.accum,
            "config_hash": recipes.config_hash(self.cfg), "config": recipes.resume_fields(self.cfg),
            "metrics": self.history,
            # sum over steps of the all-rank mean step loss, so a resume on another world size continues it
            "epoch_progress": {"loss_sum": sum(g["epoch_loss"] for g in gathered) / self.ctx.world_size,
                               "elapsed_s": elapsed},
        }

    def _checkpoint(self, reason: str):
        """Collective. Rank 0 returns the Future of the durable upload (None elsewhere)."""
        state = self._state()
        if not self.ctx.is_main:
            return None
        self.last_checkpoint_time = time.monotonic()
        log.info("checkpoint at global step %d (%s)", self.global_step, reason)
        return self.store.save(state)

    def _resume(self) -> None:
        found = None
        if self.ctx.is_main:
            found = self.store.find_latest()
            for problem in self.store.rejected:
                self.records.event("checkpoint_rejected", message=problem)
        path = distributed.broadcast_object(self.ctx, str(found.path) if found else None)
        if path is None:
            if self.ctx.is_main:
                log.info("no checkpoint for run %s: starting from scratch", self.spec.run)
                self.records.state("training", global_step=0, world_size=self.ctx.world_size, accum=self.accum)
            return
        if self.ctx.is_main:
            self.records.state("resuming", checkpoint=path, global_step=found.global_step, source=found.source)
        state = checkpoint.load(Path(path))
        checkpoint.check_resumable(state, self.cfg)
        if state["loader"]["steps_per_epoch"] != self.steps_per_epoch:
            raise checkpoint.ConfigMismatch(
                f"refusing to resume: the checkpoint's epochs have {state['loader']['steps_per_epoch']} steps but "
                f"the data in {self.data_dir} gives {self.steps_per_epoch}; resume with the same prepared dataset")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.history = list(state["metrics"])
        progress = state["epoch_progress"]
        # rank 0 carries the epoch's loss so far, scaled so the all-rank mean at the epoch end stays exact
        self.epoch_loss.fill_(progress["loss_sum"] * self.ctx.world_size if self.ctx.is_main else 0.0)
        self.epoch_elapsed_before = progress["elapsed_s"]
        rngs = state["rng"]
        if self.ctx.rank < len(rngs):
            set_rng_state(rngs[self.ctx.rank])
        else:
            log.warning("checkpoint has RNG states for %d ranks; rank %d keeps its seeded state", len(rngs),
                        self.ctx.rank)
        if self.ctx.is_main:
            log.info("resumed from %s: epoch %d, step %d of %d, global step %d (saved with %d processes x %d "
                     "accumulation, now %d x %d)", path, self.epoch, self.step_in_epoch, self.steps_per_epoch,
                     self.global_step, state["world_size"], state["accum"], self.ctx.world_size, self.accum)
            self.records.state("training", global_step=self.global_step, world_size=self.ctx.world_size,
                               accum=self.accum)

    # --- training -----------------------------------------------------------------------------------------
    def _autocast(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _mix(self, images, labels, micro: int):
        if self.mixer is None:
            return images, labels
        # Seeded by position, not by a running RNG: the same step mixes the same way after a resume.
        seed = int(np.random.SeedSequence([self.cfg.seed, self.global_step, self.ctx.rank, micro]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.mixer(images, labels)

    def _train_step(self, micro_batches) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        self.step_lr = self.optimizer.param_groups[0]["lr"]   # the LR this step uses (for the step line)
        step_loss = torch.zeros((), device=self.device)
        for micro, (images, labels) in enumerate(micro_batches):
            sync = micro == len(micro_batches) - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                images, targets = self._mix(images, labels, micro)
                with self._autocast():
                    loss = self.criterion(self.forward(images), targets) / self.accum
                self.scaler.scale(loss).backward()
            step_loss += loss.detach().float()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return step_loss

    def _evaluate(self) -> dict | None:
        """Validation loss/top-1/top-5 over the whole split (all ranks); None if a stop signal cut it short."""
        model = self.module
        # Every rank evaluates rank 0's BatchNorm statistics, the ones a checkpoint saves (each rank's last
        # forward updated its own copy; DDP would overwrite them with rank 0's at the next forward anyway).
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
        model.eval()
        k = min(5, self.num_classes)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        aborted = 0
        with torch.no_grad(), self._autocast():
            for images, labels in self.eval_loader:
                if self.signals.stop:
                    aborted = 1
                    break
                logits = model(images).float()
                if self.cfg.eval_flip_tta:
                    logits = (logits + model(torch.flip(images, dims=[3])).float()) / 2
                top = logits.topk(k, dim=1).indices.eq(labels[:, None])
                sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                                     top[:, 0].sum().double(), top.any(dim=1).sum().double(),
                                     torch.tensor(float(len(labels)), device=self.device, dtype=torch.float64)])
        model.train()
        loss, top1, top5, n, aborted_any = distributed.sum_floats(self.ctx, *sums.tolist(), float(aborted))
        if aborted_any:
            return None
        return {"val_loss": loss / n, "top1": top1 / n, "top5": top5 / n}

    def _step_boundary(self) -> str | None:
        """Collective after every step: 'stop', 'checkpoint' or None, the same answer on every rank."""
        due = busy = 0
        if self.ctx.is_main:
            due = int(time.monotonic() - self.last_checkpoint_time >= self.cfg.checkpoint_every_min * 60)
            busy = int(self.store.busy())
        stop, requested, busy = distributed.agree_max(self.ctx, self.signals.stop, self.signals.checkpoint or due,
                                                      busy)
        if stop:
            self.stop_reason = signal.Signals(stop).name   # the same on every rank, whichever got the signal
            return "stop"
        if self.max_steps and self.global_step >= self.max_steps:
            self.stop_reason = f"max-steps {self.max_steps}"
            return "stop"
        if requested and busy:
            # The previous checkpoint is still being written or uploaded (slow or unreachable S3): queueing
            # another full-state snapshot behind it would only pile up memory. Keep the request for later.
            return None
        self.signals.checkpoint = 0
        return "checkpoint" if requested else None

    def _log_step(self, step_loss: torch.Tensor, window: dict) -> None:
        loss_sum, = distributed.sum_floats(self.ctx, float(step_loss))
        if not self.ctx.is_main:
            return
        now = time.perf_counter()
        images_per_s = window["steps"] * self.cfg.global_batch / max(now - window["start"], 1e-9)
        window.update(start=now, steps=0)
        self.records.metric("step", global_step=self.global_step, epoch=self.epoch,
                            loss=loss_sum / self.ctx.world_size, lr=self.step_lr,
                            images_per_s=round(images_per_s, 2))

    def _interrupt(self, reason: str) -> int:
        """Checkpoint, wait until it is durable in S3, record the interruption. Collective."""
        if self.ctx.is_main:
            self.status.update(state="checkpointing", global_step=self.global_step, epoch=self.epoch)
        future = self._checkpoint(reason)
        code = 0
        if self.ctx.is_main:
            started = time.time()
            try:
                durable = future.result()
                log.info("checkpoint for global step %d is durable at s3://%s/%s (%.1fs after the stop)",
                         self.global_step, self.spec.bucket, durable.key, time.time() - started)
            except checkpoint.UploadFailed as exc:
                log.error("%s", exc)
                code = EXIT_NOT_DURABLE
            self.store.close()
            self.status.update(state="interrupted", global_step=self.global_step, epoch=self.epoch)
            self.records.state("interrupted", reason=reason, global_step=self.global_step, epoch=self.epoch,
                               durable=code == 0)
        distributed.barrier(self.ctx)
        return code

    def _epoch_line(self, val: dict | None) -> dict:
        loss_sum, = distributed.sum_floats(self.ctx, float(self.epoch_loss))
        line = {"epoch": self.epoch, "global_step": self.global_step,
                "train_loss": loss_sum / self.ctx.world_size / max(1, self.steps_per_epoch),
                **(val or {"val_loss": None, "top1": None, "top5": None}),
                "epoch_s": round(self.epoch_elapsed_before + time.time() - self.epoch_started, 3),
                "resolution": recipes.resolution(self.cfg, self.epoch),
                "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "gpus": self.ctx.world_size if self.device.type == "cuda" else 0,
                "processes": self.ctx.world_size, "accum": self.accum}
        return line

    def run(self) -> int:
        self.last_checkpoint_time = time.monotonic()
        self.epoch_started = time.time()
        self._resume()
        if self.ctx.is_main:
            self.status.update(state="training", global_step=self.global_step, epoch=self.epoch)
            log.info("training %s (%s preset) on %d process(es) x %d accumulation x %d images = global batch %d; "
                     "%d steps/epoch x %d epochs = %d steps; amp=%s", self.cfg.model, self.cfg.preset,
                     self.ctx.world_size, self.accum, self.micro_batch, self.cfg.global_batch, self.steps_per_epoch,
                     self.cfg.epochs, self.steps_per_epoch * self.cfg.epochs,
                     self.amp_dtype if self.autocast else "off")
        self.module.train()
        window = {"start": time.perf_counter(), "steps": 0}
        while self.epoch < self.cfg.epochs:
            resolution = recipes.resolution(self.cfg, self.epoch)
            if self.step_in_epoch == 0:
                self.epoch_loss.zero_()
                self.epoch_elapsed_before = 0.0
            self.epoch_started = time.time()
            self.train_loader.set_epoch(self.epoch, resolution=resolution, start_step=self.step_in_epoch)
            steps = itertools.islice(self.train_loader, self.steps_per_epoch - self.step_in_epoch)
            progress = _progress(self.ctx.is_main, self.steps_per_epoch, self.step_in_epoch, self.epoch)
            for micro_batches in steps:
                step_loss = self._train_step(micro_batches)
                self.epoch_loss += step_loss
                self.global_step += 1
                self.step_in_epoch += 1
                window["steps"] += 1
                progress.update(1)
                if self.global_step % self.cfg.log_every == 0:
                    self._log_step(step_loss, window)
                if self.ctx.is_main:
                    self.status.update(force=False, global_step=self.global_step, epoch=self.epoch)
                action = self._step_boundary()
                if action == "stop":
                    progress.close()
                    return self._interrupt(self.stop_reason)
                if action == "checkpoint":
                    self._checkpoint("periodic or SIGUSR2")
            progress.close()
            outcome = self._finish_epoch()
            if outcome == "stop":
                return self._interrupt(self.stop_reason)
            if outcome == "target":
                break
        return self._finish()

    def _finish_epoch(self) -> str | None:
        """Evaluate, record the epoch, checkpoint. 'target' when the target accuracy is reached, 'stop' when a
        stop signal cut the evaluation short (the checkpoint then sits before it, so a resume redoes it)."""
        last = self.epoch == self.cfg.epochs - 1
        val = None
        if last or self.cfg.target_top1 > 0 or (self.epoch + 1) % self.cfg.eval_every == 0:
            val = self._evaluate()
            if val is None:
                stop, = distributed.agree_max(self.ctx, self.signals.stop)
                self.stop_reason = signal.Signals(stop).name
                return "stop"
        line = self._epoch_line(val)
        if self.ctx.is_main:
            self.history.append(line)
            self.records.metric("epoch", **line)
            log.info("epoch %d: train loss %.4f, val loss %s, top-1 %s, %.1fs", self.epoch, line["train_loss"],
                     _fmt(line["val_loss"]), _fmt(line["top1"]), line["epoch_s"])
        reached = bool(val and self.cfg.target_top1 > 0 and val["top1"] >= self.cfg.target_top1)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss.zero_()
        self.epoch_elapsed_before = 0.0
        self.epoch_started = time.time()
        if reached and self.ctx.is_main:
            log.info("validation top-1 %.4f reached the target %.4f", val["top1"], self.cfg.target_top1)
        self._checkpoint("epoch end")
        return "target" if reached else None

    def _finish(self) -> int:
        stop, = distributed.agree_max(self.ctx, self.signals.stop)
        if stop:  # a signal during the last evaluation: the epoch-end checkpoint doubles as the notice one
            return self._interrupt(signal.Signals(stop).name)
        code = 0
        if self.ctx.is_main:
            future = self.store.pending(self.global_step)
            try:
                if future is not None:
                    future.result()
            except checkpoint.UploadFailed as exc:
                log.error("%s", exc)
                code = EXIT_NOT_DURABLE
            self.store.close()
            self.status.update(state="finished", global_step=self.global_step, epoch=self.epoch)
            self.records.state("finished", global_step=self.global_step, epoch=self.epoch,
                               top1=self.history[-1]["top1"] if self.history else None)
        distributed.barrier(self.ctx)
        return code


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _progress(enabled: bool, total: int, done: int, epoch: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch}", unit="step", mininterval=10,
                disable=None if enabled else True)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    # Before anything slow: a notice during start-up must set a flag, not kill the process (SIGUSR1's default).
    signals = Signals()
    signals.install()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    spec = RunSpec.load(args.spec)
    cfg = recipes.build_config(spec.train)
    run_dir = args.run_dir
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / "pids" / f"rank{rank}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    ctx = distributed.setup()
    trainer = None
    try:
        trainer = Trainer(cfg, spec, args.data, run_dir, ctx, signals, max_steps=args.max_steps)
        return trainer.run()
    except BaseException as exc:
        log.error("training failed: %s", exc, exc_info=not isinstance(exc, checkpoint.ConfigMismatch))
        if trainer is not None and trainer.ctx.is_main and trainer.status is not None:
            trainer.status.update(state="failed", error=str(exc))
            trainer.records.state("failed", error=str(exc), global_step=trainer.global_step)
        if isinstance(exc, checkpoint.ConfigMismatch):
            return 2
        raise
    finally:
        if trainer is not None and trainer.store is not None:
            trainer.store.close()
        distributed.teardown()
        pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
