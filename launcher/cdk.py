"""Runs the CDK CLI (`cdk deploy` / `cdk destroy`) with the run config as context, streaming its output.

Which `cdk`: the first on PATH (the Makefile puts the pinned node_modules/.bin first), else the pinned CLI of
this checkout, else `npx aws-cdk@<pinned version>`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from launcher import progress
from launcher.errors import LauncherError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cdk_command() -> list[str]:
    found = shutil.which("cdk")
    if found:
        return [found]
    pinned = PROJECT_ROOT / "node_modules" / ".bin" / "cdk"
    if pinned.exists():
        return [str(pinned)]
    npx = shutil.which("npx")
    if npx:
        version = _pinned_version()
        return [npx, "--yes", f"aws-cdk@{version}" if version else "aws-cdk"]
    raise LauncherError("the AWS CDK CLI is not installed: run `npm ci` in the project directory "
                        "(or `make setup`), which installs the pinned version")


def _pinned_version() -> str | None:
    try:
        package = json.loads((PROJECT_ROOT / "package.json").read_text())
    except (OSError, ValueError):
        return None
    deps = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    return deps.get("aws-cdk")


def context_args(context: dict[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in sorted(context.items()):
        args += ["-c", f"{key}={value}"]
    return args


def run(args: list[str], *, context: dict[str, str], what: str, region: str | None = None) -> None:
    """Run `cdk <args> -c k=v ...` in the project root, streaming each line; LauncherError on failure.

    `region` is the run config's region: the stack is environment-agnostic, so the CLI deploys wherever its
    environment points, and without this a profile's default region would win over the config."""
    argv = cdk_command() + args + context_args(context)
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1", "CDK_DISABLE_VERSION_CHECK": "1"}
    if region:
        env.update(AWS_REGION=region, AWS_DEFAULT_REGION=region)
    progress.step(f"{what}: {' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv[:3]))} ...")
    tail: list[str] = []
    with progress.spinner(what) as update:
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                line = line.rstrip()
                if line:
                    progress.console().print(f"  [dim]{line}[/]", markup=True, highlight=False, soft_wrap=True)
                    tail = (tail + [line])[-20:]
                    update(line[:60])
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        raise LauncherError(f"{what} failed (cdk exit code {code}); the CDK output is above. Last lines:\n"
                            + "\n".join(tail[-5:]))


def deploy(context: dict[str, str], outputs_file: Path, *, region: str | None = None) -> dict[str, dict[str, str]]:
    """`cdk deploy` in `region`; returns the outputs file ({stack: {OutputKey: value}})."""
    outputs_file.parent.mkdir(parents=True, exist_ok=True)
    run(["deploy", "--all", "--require-approval", "never", "--progress", "events",
         "--outputs-file", str(outputs_file)], context=context, what="cdk deploy", region=region)
    try:
        return json.loads(outputs_file.read_text())
    except (OSError, ValueError) as exc:
        raise LauncherError(f"cdk deploy wrote no readable outputs file at {outputs_file}: {exc}") from None


def destroy(context: dict[str, str], *, region: str | None = None) -> None:
    run(["destroy", "--all", "--force"], context=context, what="cdk destroy", region=region)
