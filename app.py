#!/usr/bin/env python3
"""CDK app entry point (cdk.json runs it through infra/cdk_app.sh).

    cdk synth -c operator_cidr=$(curl -s https://checkip.amazonaws.com)/32 [-c nodes=1] [-c instance_types=...]

Bad context exits 2 with one line that names the fix, instead of a traceback.
"""
import sys

import aws_cdk as cdk

from infra.application import build
from infra.config import ConfigError


def main() -> int:
    app = cdk.App()
    try:
        build(app)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        app.synth()
    except RuntimeError as exc:
        # cdk-nag findings: the report is already printed above; end with one line, not a traceback.
        if "ValidationFailed" not in str(exc):
            raise
        print(f"error: cdk-nag AwsSolutions findings without an acknowledgement ({exc})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
