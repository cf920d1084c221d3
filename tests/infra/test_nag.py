"""cdk-nag AwsSolutions: no finding is left without a written acknowledgement, and CDK itself warns of nothing."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Validations, assertions, aws_s3 as s3
from cdk_nag import AwsSolutionsChecks


def _findings(app) -> list[str]:
    report = AwsSolutionsChecks().validate_scope(app)
    return [f"{v.rule_name} ({v.severity}) at {[r.construct_path for r in v.violating_resources]}: {v.description}"
            for v in report.violations]


def test_nag_reports_unacknowledged_findings():
    """Control: the same check does report findings on a bucket with no settings and no acknowledgement."""
    app = cdk.App()
    stack = cdk.Stack(app, "Control")
    s3.Bucket(stack, "Plain")
    findings = _findings(app)
    assert any(f.startswith("AwsSolutions-S1 ") for f in findings), findings
    assert any(f.startswith("AwsSolutions-S10 ") for f in findings), findings


def test_stack_has_no_unacknowledged_nag_findings(synthesized, variant):
    for synth in (synthesized, variant):
        assert _findings(synth.app) == []


def test_every_acknowledgement_gives_a_reason(synthesized, variant):
    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    acknowledged = {}
    for synth in (synthesized, variant):
        for construct in synth.app.node.find_all():
            for entry in construct.node.metadata:
                if entry.type == key:
                    acknowledged.update({f"{construct.node.path}: {rule}": reason for rule, reason in entry.data.items()})
    nag = {k: v for k, v in acknowledged.items() if "AwsSolutions-" in k}
    assert len(nag) >= 8, sorted(acknowledged)
    short = {k: v for k, v in acknowledged.items() if len(v.split()) < 8}
    assert short == {}, "acknowledgements need a written reason"


def test_cdk_reports_no_warnings_or_errors(synthesized, variant):
    for synth in (synthesized, variant):
        annotations = assertions.Annotations.from_stack(synth.stack)
        assert annotations.find_warning("*", assertions.Match.any_value()) == []
        assert annotations.find_error("*", assertions.Match.any_value()) == []
