"""The GPU instance types this tool knows: g4dn (T4), g5 (A10G), g6 (L4).

On-demand prices are us-east-1 Linux list prices (USD/hour) and serve as the fall-back for cost figures
when no spot price can be read; `launcher status` uses DescribeSpotPriceHistory for the real spot price.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: str
    gpus: int
    vcpus: int
    memory_gib: int
    nvme_gb: int
    on_demand_usd: float
    gpu_memory_gib: int

    @property
    def family(self) -> str:
        return self.name.split(".")[0]


_GPU = {"g4dn": ("T4", 16), "g5": ("A10G", 24), "g6": ("L4", 24)}
# name: (gpus, vcpus, memory GiB, NVMe GB, on-demand USD/h)
_TABLE = {
    "g4dn.xlarge": (1, 4, 16, 125, 0.526), "g4dn.2xlarge": (1, 8, 32, 225, 0.752),
    "g4dn.4xlarge": (1, 16, 64, 225, 1.204), "g4dn.8xlarge": (1, 32, 128, 900, 2.176),
    "g4dn.12xlarge": (4, 48, 192, 900, 3.912), "g4dn.16xlarge": (1, 64, 256, 900, 4.352),
    "g5.xlarge": (1, 4, 16, 250, 1.006), "g5.2xlarge": (1, 8, 32, 450, 1.212),
    "g5.4xlarge": (1, 16, 64, 600, 1.624), "g5.8xlarge": (1, 32, 128, 900, 2.448),
    "g5.12xlarge": (4, 48, 192, 3800, 5.672), "g5.16xlarge": (1, 64, 256, 1900, 4.096),
    "g5.24xlarge": (4, 96, 384, 3800, 8.144), "g5.48xlarge": (8, 192, 768, 7600, 16.288),
    "g6.xlarge": (1, 4, 16, 250, 0.8048), "g6.2xlarge": (1, 8, 32, 450, 0.9776),
    "g6.4xlarge": (1, 16, 64, 600, 1.3232), "g6.8xlarge": (1, 32, 128, 900, 2.0144),
    "g6.12xlarge": (4, 48, 192, 3760, 4.6016), "g6.16xlarge": (1, 64, 256, 1880, 3.3968),
    "g6.24xlarge": (4, 96, 384, 3760, 6.6752), "g6.48xlarge": (8, 192, 768, 7520, 13.3504),
}

INSTANCE_TYPES: dict[str, InstanceType] = {
    name: InstanceType(name, _GPU[name.split(".")[0]][0], gpus, vcpus, mem, nvme, price, _GPU[name.split(".")[0]][1])
    for name, (gpus, vcpus, mem, nvme, price) in _TABLE.items()
}

DEFAULT_INSTANCE_TYPES = ("g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge", "g6.xlarge", "g6.2xlarge")


def lookup(name: str) -> InstanceType:
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, INSTANCE_TYPES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown instance type {name!r}: this tool supports g4dn, g5 and g6 types "
            f"({', '.join(sorted(INSTANCE_TYPES))}).{hint}"
        ) from None


def validate(names) -> list[str]:
    names = list(names)
    if not names:
        raise ValueError("instance_types is empty: list at least one of " + ", ".join(DEFAULT_INSTANCE_TYPES))
    for name in names:
        lookup(name)
    if len(set(names)) != len(names):
        raise ValueError(f"instance_types lists a type twice: {names}")
    return names
