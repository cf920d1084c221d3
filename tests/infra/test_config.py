"""Context validation: good values are read, bad ones are refused with a message naming the key and the fix."""
from __future__ import annotations

import pytest

from infra.config import CIDR_FIX, DEFAULT_AMI_PARAMETER, ConfigError, StackConfig
from launcher.catalog import DEFAULT_INSTANCE_TYPES


def config(**context) -> StackConfig:
    return StackConfig.from_context(context.get)


def test_defaults_need_only_the_operator_cidr():
    cfg = config(operator_cidr="203.0.113.7/32")
    assert cfg.nodes == 1
    assert cfg.instance_types == DEFAULT_INSTANCE_TYPES
    assert cfg.allocation_strategy == "price-capacity-optimized"
    assert cfg.ami_parameter == DEFAULT_AMI_PARAMETER
    assert (cfg.root_volume_gb, cfg.data_volume_gb) == (100, 0)  # every default type has NVMe instance store
    assert cfg.destroy_bucket is False
    assert (cfg.budget_email, cfg.key_pair, cfg.stack_name) == (None, None, "SpotResnet")


def test_strings_from_the_command_line_and_json_values_from_cdk_json_read_alike():
    from_cli = config(operator_cidr="198.51.100.0/24", nodes="3", destroy_bucket="true", budget_usd="250",
                      instance_types="g5.xlarge, g6.xlarge", availability_zones="us-east-1a,us-east-1b")
    from_json = config(operator_cidr="198.51.100.0/24", nodes=3, destroy_bucket=True, budget_usd=250,
                       instance_types=["g5.xlarge", "g6.xlarge"], availability_zones=["us-east-1a", "us-east-1b"])
    assert from_cli == from_json
    assert from_cli.nodes == 3 and from_cli.destroy_bucket is True and from_cli.budget_usd == 250.0
    assert from_cli.instance_types == ("g5.xlarge", "g6.xlarge")


def test_nodes_zero_parks_the_group():
    assert config(operator_cidr="203.0.113.7/32", nodes="0").nodes == 0


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_open_world_cidr_is_refused(cidr):
    with pytest.raises(ConfigError) as err:
        config(operator_cidr=cidr)
    assert "operator_cidr" in str(err.value) and "whole internet" in str(err.value) and CIDR_FIX in str(err.value)


@pytest.mark.parametrize("context, words", [
    ({}, ["operator_cidr is missing", CIDR_FIX]),
    ({"operator_cidr": "  "}, ["operator_cidr is missing"]),
    ({"operator_cidr": "my-laptop"}, ["not a CIDR block", CIDR_FIX]),
    ({"operator_cidr": "203.0.113.7"}, ["no prefix length", "203.0.113.7/32"]),
    ({"operator_cidr": "203.0.113.7/24"}, ["host bits", "203.0.113.0/24"]),
    ({"operator_cidr": "300.1.1.1/32"}, ["not a CIDR block"]),
])
def test_bad_operator_cidr_names_the_fix(context, words):
    with pytest.raises(ConfigError) as err:
        config(**context)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("key, value, words", [
    ("nodes", "-1", ["nodes=-1", "out of range", "-c nodes=1"]),
    ("nodes", "two", ["nodes='two'", "not a whole number", "-c nodes=1"]),
    ("nodes", "1.5", ["not a whole number"]),
    ("instance_types", "g9.huge", ["unknown instance type 'g9.huge'", "-c instance_types=g5.xlarge"]),
    ("instance_types", "g5.xlarge,g5.xlarge", ["twice"]),
    ("instance_types", "", ["empty"]),
    ("allocation_strategy", "lowest-price", ["-c allocation_strategy=price-capacity-optimized",
                                             "-c allocation_strategy=capacity-optimized"]),
    ("destroy_bucket", "maybe", ["-c destroy_bucket=true", "-c destroy_bucket=false"]),
    ("budget_email", "not-an-email", ["budget_email", "you@example.com"]),
    ("budget_usd", "-5", ["budget_usd", "-c budget_usd=100"]),
    ("ami_parameter", "ami-0123", ["ami_parameter", DEFAULT_AMI_PARAMETER]),
    ("availability_zones", "us-east-1a,eu-west-1b", ["several regions"]),
    ("availability_zones", "zone-a", ["invalid names", "describe-availability-zones"]),
    ("stack_name", "1bad_name", ["stack_name", "-c stack_name=SpotResnet"]),
    ("root_volume_gb", "20", ["root_volume_gb=20", "out of range"]),
])
def test_bad_context_values_name_the_key_and_the_fix(key, value, words):
    with pytest.raises(ConfigError) as err:
        config(operator_cidr="203.0.113.7/32", **{key: value})
    assert key in str(err.value)
    for word in words:
        assert word in str(err.value)
    assert "\n" not in str(err.value)


def test_ipv6_operator_cidr_is_accepted():
    assert config(operator_cidr="2001:db8::/64").operator_cidr == "2001:db8::/64"
