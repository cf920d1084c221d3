"""The stack's settings, read from CDK context (`cdk synth -c key=value` or cdk.json) and validated.

Context values arrive as strings from the command line and as JSON values from cdk.json, so every
reader accepts both. Every error names the context key and how to fix it: `cdk synth` prints the
message as one line (see app.py).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable

from launcher import catalog

# AWS Deep Learning Base OSS NVIDIA driver GPU AMI (Ubuntu 22.04): NVIDIA driver, CUDA, Docker, AWS CLI.
DEFAULT_AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DEFAULT_STACK_NAME = "SpotResnet"
ALLOCATION_STRATEGIES = ("price-capacity-optimized", "capacity-optimized")
CIDR_FIX = "-c operator_cidr=$(curl -s https://checkip.amazonaws.com)/32"
# The instance role may read SecureString parameters under this path only (the HF token lives here).
SSM_PARAMETER_PATH = "/spot-resnet/"

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_AZ_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SSM_NAME = re.compile(r"^/[A-Za-z0-9_.\-/]+$")
_KEY_PAIR = re.compile(r"^[\x20-\x7e]{1,255}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """Bad or missing CDK context; the message names the key and the fix."""


@dataclass(frozen=True)
class StackConfig:
    operator_cidr: str
    nodes: int = 1
    instance_types: tuple[str, ...] = catalog.DEFAULT_INSTANCE_TYPES
    allocation_strategy: str = "price-capacity-optimized"
    ami_parameter: str = DEFAULT_AMI_PARAMETER
    root_volume_gb: int = 100
    data_volume_gb: int = 0
    availability_zones: tuple[str, ...] = ()
    az_count: int = 3
    destroy_bucket: bool = False
    budget_email: str | None = None
    budget_usd: float = 100.0
    key_pair: str | None = None
    stack_name: str = DEFAULT_STACK_NAME

    @property
    def types_without_instance_store(self) -> tuple[str, ...]:
        return tuple(t for t in self.instance_types if catalog.lookup(t).nvme_gb == 0)

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> "StackConfig":
        """`get` is `app.node.try_get_context` (returns None for a missing key)."""
        instance_types = tuple(_instance_types(get("instance_types")))
        data_volume_gb = _int(get("data_volume_gb"), "data_volume_gb", default=None, minimum=0, maximum=16384)
        if data_volume_gb is None:
            # One launch template serves every type, so a type without NVMe instance store forces an EBS
            # data volume for all of them; with only NVMe types no EBS volume is paid for.
            no_nvme = [t for t in instance_types if catalog.lookup(t).nvme_gb == 0]
            data_volume_gb = 500 if no_nvme else 0
        budget_email = _optional_str(get("budget_email"))
        if budget_email is not None and not _EMAIL.match(budget_email):
            raise ConfigError(f"context budget_email={budget_email!r} is not an email address: "
                              "use -c budget_email=you@example.com, or leave it out for no budget alert")
        key_pair = _optional_str(get("key_pair"))
        if key_pair is not None and not _KEY_PAIR.match(key_pair):
            raise ConfigError(f"context key_pair={key_pair!r} is not a valid EC2 key pair name: "
                              "use the name shown by `aws ec2 describe-key-pairs`, or leave it out")
        return cls(
            operator_cidr=_operator_cidr(get("operator_cidr")),
            nodes=_int(get("nodes"), "nodes", default=1, minimum=0, maximum=64,
                       hint="-c nodes=1 (0 parks the group without deleting anything)"),
            instance_types=instance_types,
            allocation_strategy=_allocation_strategy(get("allocation_strategy")),
            ami_parameter=_ami_parameter(get("ami_parameter")),
            root_volume_gb=_int(get("root_volume_gb"), "root_volume_gb", default=100, minimum=75, maximum=16384),
            data_volume_gb=data_volume_gb,
            availability_zones=_availability_zones(get("availability_zones")),
            az_count=_int(get("az_count"), "az_count", default=3, minimum=1, maximum=6,
                          hint="-c az_count=3, or list them with -c availability_zones=us-east-1a,us-east-1b"),
            destroy_bucket=_bool(get("destroy_bucket"), "destroy_bucket", default=False),
            budget_email=budget_email,
            budget_usd=_budget_usd(get("budget_usd")),
            key_pair=key_pair,
            stack_name=_stack_name(get("stack_name")),
        )


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _operator_cidr(value: Any) -> str:
    text = _optional_str(value)
    if text is None:
        raise ConfigError(f"context operator_cidr is missing: SSH is admitted only from your address, "
                          f"so pass it, e.g. {CIDR_FIX} (`launcher up` fills it in for you)")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"context operator_cidr={text!r} is not a CIDR block: use {CIDR_FIX}") from None
    if "/" not in text:
        raise ConfigError(f"context operator_cidr={text!r} has no prefix length: use {text}/32 "
                          f"(IPv4) or {text}/128 (IPv6), e.g. {CIDR_FIX}")
    if network.prefixlen == 0:
        raise ConfigError(f"context operator_cidr={text!r} would open SSH to the whole internet: "
                          f"use your own address, e.g. {CIDR_FIX}")
    if str(network) != text:
        raise ConfigError(f"context operator_cidr={text!r} has host bits set: use {network} "
                          f"or your own address, e.g. {CIDR_FIX}")
    return text


def _int(value: Any, key: str, *, default, minimum: int, maximum: int, hint: str | None = None):
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    fix = hint or f"-c {key}={default if default is not None else minimum}"
    if isinstance(value, bool):
        raise ConfigError(f"context {key}={value!r} is not a whole number: use {fix}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"context {key}={value!r} is not a whole number: use {fix}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"context {key}={number} is out of range {minimum}..{maximum}: use {fix}")
    return number


def _bool(value: Any, key: str, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"context {key}={value!r} is not true or false: use -c {key}=true or -c {key}=false")


def _instance_types(value: Any) -> list[str]:
    if value is None:
        return list(catalog.DEFAULT_INSTANCE_TYPES)
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    try:
        return catalog.validate(names)
    except ValueError as exc:
        raise ConfigError(f"context instance_types: {exc} Fix: -c instance_types="
                          + ",".join(catalog.DEFAULT_INSTANCE_TYPES)) from None


def _allocation_strategy(value: Any) -> str:
    text = _optional_str(value) or ALLOCATION_STRATEGIES[0]
    if text not in ALLOCATION_STRATEGIES:
        raise ConfigError(f"context allocation_strategy={text!r} is not supported: use "
                          + " or ".join(f"-c allocation_strategy={s}" for s in ALLOCATION_STRATEGIES))
    return text


def _ami_parameter(value: Any) -> str:
    text = _optional_str(value) or DEFAULT_AMI_PARAMETER
    if not _SSM_NAME.match(text):
        raise ConfigError(f"context ami_parameter={text!r} is not an SSM parameter name: use a public "
                          f"parameter such as -c ami_parameter={DEFAULT_AMI_PARAMETER}")
    return text


def _availability_zones(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    bad = [n for n in names if not _AZ_NAME.match(n)]
    if bad:
        raise ConfigError(f"context availability_zones has invalid names {bad}: list the region's zones, e.g. "
                          "-c availability_zones=$(aws ec2 describe-availability-zones --query "
                          "'AvailabilityZones[].ZoneName' --output text | tr '\\t' ,)")
    if len({n[:-1] for n in names}) > 1:
        raise ConfigError(f"context availability_zones {names} span several regions: list zones of one region")
    if len(set(names)) != len(names):
        raise ConfigError(f"context availability_zones lists a zone twice: {names}")
    return tuple(names)


def _budget_usd(value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 100.0
    try:
        amount = float(str(value).strip())
    except ValueError:
        amount = -1.0
    if not amount > 0:
        raise ConfigError(f"context budget_usd={value!r} is not a positive amount: use -c budget_usd=100")
    return amount


def _stack_name(value: Any) -> str:
    text = _optional_str(value) or DEFAULT_STACK_NAME
    if not _STACK_NAME.match(text):
        raise ConfigError(f"context stack_name={text!r} is not a valid CloudFormation stack name: use letters, "
                          f"digits and '-', starting with a letter, e.g. -c stack_name={DEFAULT_STACK_NAME}")
    return text
