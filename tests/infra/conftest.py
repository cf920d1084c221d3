"""Synthesizes the CDK app in-process once per session; the template tests share the result."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# The jsii runtime (Node) prints a large banner per process for end-of-life Node versions.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20,21")

OPERATOR_CIDR = "203.0.113.7/32"


@dataclass
class Synthesized:
    app: object
    stack: object
    template: dict
    outdir: Path

    def resources(self, type_name: str) -> dict[str, dict]:
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == type_name}

    def one(self, type_name: str) -> dict:
        found = self.resources(type_name)
        assert len(found) == 1, f"expected one {type_name}, found {sorted(found)}"
        return next(iter(found.values()))


def synthesize(context: dict, outdir: Path) -> Synthesized:
    """The same path app.py takes: build() adds the stack and the nag pack; synth() fails on any finding."""
    import aws_cdk as cdk

    from infra.application import build

    app = cdk.App(context=context, outdir=str(outdir))
    stack = build(app)
    app.synth()
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return Synthesized(app, stack, template, outdir)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory) -> Synthesized:
    """Defaults plus a budget email (so the cost guard is in the template)."""
    return synthesize({"operator_cidr": OPERATOR_CIDR, "budget_email": "ops@example.com"},
                      tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def variant(tmp_path_factory) -> Synthesized:
    """Every non-default choice at once: parked group, capacity-optimized, EBS data volume, bucket destroyed on
    delete, named zones, an IPv6 operator, a key pair, another stack name, no budget."""
    return synthesize({
        "operator_cidr": "2001:db8:1234::/48",
        "nodes": "0",
        "allocation_strategy": "capacity-optimized",
        "instance_types": "g6.xlarge,g5.xlarge",
        "data_volume_gb": "200",
        "destroy_bucket": "true",
        "availability_zones": "eu-west-1a,eu-west-1b,eu-west-1c",
        "key_pair": "my-laptop",
        "stack_name": "SpotResnetVariant",
        "ami_parameter": "/aws/service/deeplearning/ami/x86_64/other/latest/ami-id",
    }, tmp_path_factory.mktemp("cdk-variant"))
