"""The Python environment the trainer runs in, built once per instance and reused.

Which interpreter, in order:
1. SPOT_PYTHON, when set: an interpreter that already has job/requirements.txt (tests, the drill, or a
   DLAMI's preinstalled PyTorch env such as /opt/pytorch/bin/python). pip is skipped.
2. The current interpreter, when every pinned requirement is installed at its pinned version.
3. A venv at $SPOT_DATA_DIR/env with `pip install -r job/requirements.txt`. A marker holding the
   requirements file's hash is written after pip succeeds, so a re-run with the same file does nothing
   and an interrupted install is simply redone (pip skips what is already there).

    python -m job.environment [--requirements job/requirements.txt]   # prints the interpreter path
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from job import paths

log = logging.getLogger(__name__)

DEFAULT_REQUIREMENTS = Path(__file__).with_name("requirements.txt")
MARKER = ".spot-requirements.sha256"
_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-\[\],]+?)\s*==\s*([^\s;#]+)")


class EnvironmentSetupError(RuntimeError):
    pass


def pins(requirements: Path) -> dict[str, str]:
    found = {}
    for line in requirements.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[re.sub(r"\[.*\]", "", match.group(1)).lower()] = match.group(2)
    return found


def missing_requirements(requirements: Path) -> list[str]:
    """Pinned distributions this interpreter lacks or has at another version ('+cu128' suffixes ignored)."""
    from importlib import metadata

    missing = []
    for name, version in pins(requirements).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}=={version} (not installed)")
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            missing.append(f"{name}=={version} (have {installed})")
    return missing


def env_dir() -> Path:
    return paths.data_dir() / "env"


def _digest(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def ensure(requirements: Path = DEFAULT_REQUIREMENTS, *, target: Path | None = None) -> str:
    """The interpreter to run the trainer with; builds the venv when needed (minutes, pip shows progress)."""
    requirements = Path(requirements)
    chosen = os.environ.get("SPOT_PYTHON")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise EnvironmentSetupError(f"SPOT_PYTHON={chosen} is not an executable interpreter; "
                                    "unset it or point it at a python that has job/requirements.txt installed")
        log.info("environment: using SPOT_PYTHON=%s (pip skipped)", chosen)
        return chosen
    if not requirements.is_file():
        raise EnvironmentSetupError(f"{requirements} is missing: the job package is incomplete; push it again")
    missing = missing_requirements(requirements)
    if not missing:
        log.info("environment: %s already has every requirement", sys.executable)
        return sys.executable
    venv = Path(target or env_dir())
    python = venv / "bin" / "python"
    marker = venv / MARKER
    digest = _digest(requirements)
    if python.exists() and marker.exists() and marker.read_text().strip() == digest:
        log.info("environment: %s is up to date", venv)
        return str(python)
    log.info("environment: building %s (this interpreter lacks %s)", venv, ", ".join(missing[:5]))
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        except subprocess.CalledProcessError as exc:
            raise EnvironmentSetupError(f"could not create a venv at {venv} ({exc}); on Ubuntu install the "
                                    "python3-venv package, or set SPOT_PYTHON to a ready interpreter") from exc
    marker.unlink(missing_ok=True)
    subprocess.run([str(python), "-m", "pip", "install", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-r", str(requirements)], check=True)
    marker.write_text(digest + "\n")
    log.info("environment: %s ready", venv)
    return str(python)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        print(ensure(args.requirements))
    except (EnvironmentSetupError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
