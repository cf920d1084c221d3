"""cfn-lint on the synthesized templates: no errors, and only documented warnings."""
from __future__ import annotations

import json

from cfnlint.api import ManualArgs, lint

# W3005 "dependency already enforced by a GetAtt": CDK adds an explicit DependsOn from the results-site
# function to its role (and the role's policy) so the policy exists before the first invocation; the
# duplicate edge is harmless.
DOCUMENTED_WARNINGS = {"W3005"}
# W3010 "avoid hardcoding availability zones": only when zones are named in context (-c availability_zones=...),
# which is exactly what that setting asks for; by default the zones come from Fn::GetAZs.
NAMED_ZONE_WARNINGS = {"W3010"}


def _matches_of(template: dict):
    return lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))


def test_cfn_lint_finds_no_errors(synthesized, variant):
    for synth, allowed in ((synthesized, DOCUMENTED_WARNINGS), (variant, DOCUMENTED_WARNINGS | NAMED_ZONE_WARNINGS)):
        matches = _matches_of(synth.template)
        errors = [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches
                  if m.rule.severity == "error"]
        assert errors == []
        undocumented = [f"{m.rule.id} {m.message}" for m in matches
                        if m.rule.severity != "error" and m.rule.id not in allowed]
        assert undocumented == []


def test_cfn_lint_catches_a_broken_template(synthesized):
    """Control: the same call reports an error when the template is wrong."""
    broken = json.loads(json.dumps(synthesized.template))
    group = next(r for r in broken["Resources"].values() if r["Type"] == "AWS::AutoScaling::AutoScalingGroup")
    del group["Properties"]["MaxSize"]
    matches = _matches_of(broken)
    assert any(m.rule.severity == "error" and "MaxSize" in m.message for m in matches), [str(m) for m in matches]
