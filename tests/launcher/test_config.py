"""Each config error names the key and the fix; the CLI prints it without a traceback (exit code 2)."""
from __future__ import annotations

import pytest

from launcher import config
from launcher.errors import ConfigError
from tests.launcher.conftest import launcher, write_config

BASE = {"name": "run-a", "region": "us-east-1", "instance_types": ["g5.xlarge"], "nodes": 1,
        "train": {"preset": "fast", "epochs": 4}}


def parse(**changes):
    data = {**BASE, **changes}
    return config.parse({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize("changes, expected", [
    ({"instance_types": ["g5.xlarg"]}, ["unknown instance type 'g5.xlarg'", "Did you mean g5.xlarge"]),
    ({"instance_types": ["p4d.24xlarge"]}, ["instance_types", "g4dn, g5 and g6"]),
    ({"instance_types": []}, ["instance_types is empty"]),
    ({"region": "us-est-1"}, ["region = 'us-est-1' is not an AWS region", "did you mean", 'region = "us-east-1"']),
    ({"nodes": -1}, ["nodes = -1", "≥ 0", "nodes = 1"]),
    ({"nodes": "two"}, ["nodes = 'two'"]),
    ({"train": {"preset": "fastest"}}, ["train.preset = 'fastest' is unknown", 'did you mean "fast"', "classic"]),
    ({"train": {"preset": "fast", "epoch": 3}}, ["train:", "unknown training override", "'epoch'"]),
    ({"train": {"epochs": 0}}, ["train.epochs = 0 must be a positive whole number"]),
    ({"operator_cidr": "0.0.0.0/0"}, ["whole internet"]),
    ({"operator_cidr": "10.0.0.1/24"}, ["operator_cidr = '10.0.0.1/24'", "no host bits"]),
    ({"name": "Run_A"}, ["run name 'Run_A' is not valid"]),
    ({"allocation_strategy": "lowest-price"}, ["allocation_strategy", "price-capacity-optimized"]),
    ({"instance_type": ["g5.xlarge"]}, ["unknown key 'instance_type'", "did you mean 'instance_types'"]),
])
def test_config_errors_name_the_key_and_the_fix(changes, expected):
    with pytest.raises(ConfigError) as err:
        parse(**changes)
    for text in expected:
        assert text in str(err.value)


def test_valid_config_and_cdk_context():
    cfg = parse(operator_cidr="203.0.113.7/32", budget={"usd": 50, "email": "me@example.com"},
                bucket={"retain": False})
    ctx = cfg.cdk_context()
    assert ctx == {"stack_name": "SpotResnet-run-a", "nodes": "1", "instance_types": "g5.xlarge",
                   "allocation_strategy": "price-capacity-optimized", "destroy_bucket": "true",
                   "operator_cidr": "203.0.113.7/32", "budget_usd": "50", "budget_email": "me@example.com"}
    assert cfg.hf_token_parameter == "/spot-resnet/run-a/hf-token"


def test_example_config_is_valid():
    from tests.launcher.conftest import ROOT

    cfg = config.load(ROOT / "examples" / "run.toml")
    assert cfg.train["preset"] == "fast" and cfg.retain_bucket and cfg.train["epochs"] == 16


def test_missing_token_needed_only_without_mirror(aws, bucket, monkeypatch):
    from job import layout, s3

    cfg = parse(dataset={"name": "photos", "hf_token_env": "TEST_HF_TOKEN"})
    client = s3.client("s3")
    monkeypatch.delenv("TEST_HF_TOKEN", raising=False)
    with pytest.raises(ConfigError) as err:
        config.require_dataset_access(cfg, client, bucket)
    message = str(err.value)
    assert "dataset.hf_token_env" in message and "export TEST_HF_TOKEN=" in message
    assert f"s3://{bucket}/datasets/photos/manifest.json" in message
    # the token alone is enough: it will download
    monkeypatch.setenv("TEST_HF_TOKEN", "hf_secret")
    assert config.require_dataset_access(cfg, client, bucket) is False
    # a mirror in the bucket needs no token at all
    monkeypatch.delenv("TEST_HF_TOKEN")
    client.put_object(Bucket=bucket, Key=layout.dataset_manifest_key("photos"), Body=b'{"files": {}}')
    assert config.require_dataset_access(cfg, client, bucket) is True


def test_cli_prints_config_error_without_traceback(tmp_path):
    path = write_config(tmp_path / "run.toml", extra='allocation_strategy = "cheapest"')
    result = launcher("status", "--config", str(path))
    assert result.returncode == 2
    assert "config error:" in result.stderr and "allocation_strategy" in result.stderr
    assert "Traceback" not in result.stderr

    missing = launcher("status", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "examples/run.toml" in missing.stderr and "Traceback" not in missing.stderr
