"""Helpers for cdk-nag acknowledgements whose finding ids embed resolved ARNs."""
from __future__ import annotations

import re

from aws_cdk import Stack
from constructs import IConstruct


def _nag_string(value, scope: IConstruct) -> str:
    # cdk-nag renders intrinsics the way its IAM5 findings print them: Ref X -> <X>,
    # Fn::GetAtt [X, A] -> <X.A>, pseudo parameters -> <AWS::Region>, Fn::Join concatenated.
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        (key, arg), = value.items()
        if key == "Ref":
            return f"<{arg}>"
        if key == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if key == "Fn::Join":
            return arg[0].join(_nag_string(part, scope) for part in arg[1])
    raise ValueError(f"cannot render {value!r} as a cdk-nag finding")


def wildcard_finding(resource: str, scope: IConstruct) -> str:
    """The AwsSolutions-IAM5 finding id for a wildcard `resource` (a string that may hold tokens)."""
    rendered = _nag_string(Stack.of(scope).resolve(resource), scope)
    if "*" not in rendered or re.search(r"\s", rendered):
        raise ValueError(f"{rendered!r} is not a wildcard resource")
    return f"AwsSolutions-IAM5[Resource::{rendered}]"
