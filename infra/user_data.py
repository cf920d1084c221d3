"""Renders infra/user_data.sh: the shell that boots a training instance (mount /data, join the active run)."""
from __future__ import annotations

import re
from pathlib import Path

from job import layout

TEMPLATE = Path(__file__).with_name("user_data.sh")
LOG_PATH = "/var/log/spot-resnet-bootstrap.log"
DATA_DIR = "/data"
_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")


def render(*, bucket: str, region: str, template: Path = TEMPLATE) -> str:
    """Fill the placeholders; `bucket` and `region` may be CDK tokens (resolved by CloudFormation)."""
    values = {
        "@@BUCKET@@": bucket,
        "@@REGION@@": region,
        "@@DATA_DIR@@": DATA_DIR,
        "@@ACTIVE_RUN_KEY@@": layout.active_run_key(),
        "@@LOG_PATH@@": LOG_PATH,
        # The shell checks the run name from active.json with the same rule the S3 keys use.
        "@@RUN_NAME_PATTERN@@": layout._RUN_NAME.pattern,
    }
    text = template.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ValueError(f"{template} has placeholders with no value: {left}")
    return text
