"""Builds the CDK app: the stack from context, checked by the cdk-nag AwsSolutions pack at synth."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import StackConfig
from infra.stack import SpotTrainingStack


def build(app: cdk.App) -> SpotTrainingStack:
    """Add the stack to `app` (context read from it) and register the nag pack; raises ConfigError on bad context."""
    config = StackConfig.from_context(app.node.try_get_context)
    stack = SpotTrainingStack(app, config.stack_name, config=config)
    # Any finding without an acknowledgement (each carries its reason) fails synthesis.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack
