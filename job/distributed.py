"""Process-group setup under torchrun and the small collectives the trainer needs.

Besides the main group (nccl on CUDA, gloo on CPU) every process joins a gloo group for control
messages (stop/checkpoint flags, metric sums, RNG states): agreeing on a flag then costs a tiny CPU
all-reduce and never a CUDA synchronisation.
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    control: object = None          # gloo process group for CPU-side agreement

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(timeout_min: float = 30.0) -> DistContext:
    """Join the torchrun job (or run alone when launched without torchrun)."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if "MASTER_ADDR" not in os.environ:  # plain `python -m job.train`: a group of one
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    timeout = datetime.timedelta(minutes=timeout_min)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout,
                            device_id=device if backend == "nccl" else None)
    control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return DistContext(rank, world_size, local_rank, device, backend, control)


def agree_max(ctx: DistContext, *flags: int) -> list[int]:
    """Every rank learns, for each flag, the largest value any rank holds (all-reduce MAX, control group);
    0 = nobody raised it."""
    tensor = torch.tensor([int(f) for f in flags], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=ctx.control)
    return [int(v) for v in tensor.tolist()]


def sum_floats(ctx: DistContext, *values: float) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=ctx.control)
    return tensor.tolist()


def gather_objects(ctx: DistContext, obj) -> list:
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=ctx.control)
    return out


def broadcast_object(ctx: DistContext, obj=None):
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx.control)
    return box[0]


def barrier(ctx: DistContext) -> None:
    dist.barrier(group=ctx.control)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def micro_batching(global_batch: int, world_size: int, max_micro_batch: int) -> tuple[int, int]:
    """(accum, micro_batch) with micro_batch * accum * world_size == global_batch and micro_batch <= max.

    The smallest accumulation that fits, so a relaunch on a machine with a different GPU count keeps
    the same global batch (and so the same schedule), only split differently.
    """
    if global_batch % world_size:
        raise ValueError(f"global_batch {global_batch} is not divisible by the {world_size} training processes; "
                         "choose a global batch that is a multiple of every GPU count you may land on (e.g. 1024)")
    per_rank = global_batch // world_size
    for accum in range(max(1, -(-per_rank // max_micro_batch)), per_rank + 1):
        if per_rank % accum == 0:
            return accum, per_rank // accum
    raise AssertionError("unreachable: accum = per_rank always divides")
