"""`cdk synth` through the pinned CDK CLI, with no AWS credentials anywhere: good context synthesizes, bad
context fails with one line that names the fix (no Python traceback)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("CDK_")}
    env.update({
        "HOME": str(home),  # no ~/.aws/credentials or config to fall back on
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20,21",
    })
    return env


def _synth(args: list[str], tmp: Path) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    command = [str(CDK), "synth", "--quiet", "--no-notices", "-o", str(tmp / "cdk.out"), *args]
    return subprocess.Popen(command, cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """All CLI runs at once (each is a Node + Python + jsii start-up): {name: (returncode, output, outdir)}."""
    if not CDK.exists():
        pytest.fail(f"{CDK} is missing: run `npm ci` (make test does) to install the pinned CDK CLI")
    cases = {
        "good": ["-c", "operator_cidr=203.0.113.7/32"],
        "open_cidr": ["-c", "operator_cidr=0.0.0.0/0"],
        "missing_cidr": ["-c", "nodes=1"],
        "unknown_type": ["-c", "operator_cidr=203.0.113.7/32", "-c", "instance_types=g5.xlarge,g9.huge"],
        "negative_nodes": ["-c", "operator_cidr=203.0.113.7/32", "-c", "nodes=-1"],
    }
    base = tmp_path_factory.mktemp("cdk-cli")
    procs = {name: _synth(args, base / name) for name, args in cases.items()}
    results = {}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=240)
        results[name] = (proc.returncode, output, base / name / "cdk.out")
    return results


def test_synth_succeeds_without_credentials(cli_runs):
    code, output, outdir = cli_runs["good"]
    assert code == 0, output
    template = json.loads((outdir / "SpotResnet.template.json").read_text())
    groups = [r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::SecurityGroup"]
    assert groups[0]["Properties"]["SecurityGroupIngress"][0]["CidrIp"] == "203.0.113.7/32"
    assert "Traceback" not in output


@pytest.mark.parametrize("case, words", [
    ("open_cidr", ["operator_cidr='0.0.0.0/0'", "whole internet", "-c operator_cidr=$(curl -s https://checkip.amazonaws.com)/32"]),
    ("missing_cidr", ["operator_cidr is missing", "-c operator_cidr=$(curl -s https://checkip.amazonaws.com)/32"]),
    ("unknown_type", ["unknown instance type 'g9.huge'", "-c instance_types=g5.xlarge,g5.2xlarge"]),
    ("negative_nodes", ["nodes=-1", "-c nodes=1"]),
])
def test_bad_context_fails_with_one_line_naming_the_fix(cli_runs, case, words):
    code, output, outdir = cli_runs[case]
    assert code != 0, output
    assert "Traceback" not in output
    (line,) = [l for l in output.splitlines() if l.startswith("error: context ")]
    for word in words:
        assert word in line, line
    assert not (outdir / "SpotResnet.template.json").exists()
