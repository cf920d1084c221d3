"""Who am I: the instance identity every run record carries (id, type, AZ, region, price per hour).

Order: the metadata service if it answers quickly (AWS, or the local stand-in of a drill "instance"),
else SPOT_INSTANCE_ID / SPOT_INSTANCE_TYPE / SPOT_AZ from the environment, else 'local' defaults.
AWS_EC2_METADATA_DISABLED=true (botocore's switch) skips the metadata service.
"""
from __future__ import annotations

import functools
import logging
import os
import socket

from job.imds import IMDS, IMDSError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _base_identity(timeout: float) -> dict:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true":
        try:
            found = IMDS(timeout=timeout).instance_identity()
            if found.get("instance_id"):
                return {**found, "region": found.get("region") or region, "source": "imds"}
        except IMDSError as exc:
            log.info("instance metadata not available (%s); using the environment", exc)
    if os.environ.get("SPOT_INSTANCE_ID"):
        az = os.environ.get("SPOT_AZ", "local")
        return {"instance_id": os.environ["SPOT_INSTANCE_ID"],
                "instance_type": os.environ.get("SPOT_INSTANCE_TYPE", "local"), "az": az,
                "region": region, "source": "env"}
    return {"instance_id": f"local-{socket.gethostname()}", "instance_type": "local", "az": "local",
            "region": region, "source": "default"}


def identity(spec=None, *, timeout: float = 0.5) -> dict:
    """{"instance_id", "instance_type", "az", "region", "price_per_hour"} for this machine.

    `spec` (a RunSpec, or a dict of instance type -> USD/h) supplies the price; None when it has none.
    The metadata lookup is cached per process, so calling this often is cheap.
    """
    base = dict(_base_identity(timeout))
    prices = getattr(spec, "price_per_hour", spec) or {}
    price = prices.get(base["instance_type"])
    base["price_per_hour"] = float(price) if price is not None else None
    base.pop("source", None)
    return base


def identity_source(timeout: float = 0.5) -> str:
    """Where identity() got its answer ('imds', 'env' or 'default'): for logs."""
    return _base_identity(timeout)["source"]
