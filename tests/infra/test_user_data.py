"""The user data template renders completely and is valid bash."""
from __future__ import annotations

import subprocess

import pytest

from infra import user_data
from job import layout


def test_rendered_user_data_is_complete_valid_bash(tmp_path):
    text = user_data.render(bucket="my-bucket", region="eu-west-1")
    assert "@@" not in text
    assert text.startswith("#!/bin/bash\n")
    assert 'BUCKET="my-bucket"' in text and 'REGION="eu-west-1"' in text
    assert f'ACTIVE_RUN_KEY="{layout.active_run_key()}"' in text
    script = tmp_path / "user-data.sh"
    script.write_text(text)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("run, accepted", [("resnet50-a", True), ("0run", True), ("../etc", False),
                                           ("Run", False), ("a b", False), ("x" * 64, False)])
def test_shell_checks_run_names_like_the_s3_layout(run, accepted, tmp_path):
    """The rendered pattern, run by bash, agrees with job.layout.check_run_name."""
    text = user_data.render(bucket="b", region="r")
    (check,) = [line for line in text.splitlines() if line.startswith('if ! [[ "$RUN" =~ ')]
    snippet = f'RUN={run!r}\n{check}\necho ok'
    result = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True)
    assert (result.returncode == 0 and result.stdout.strip() == "ok") is accepted, result
    try:
        layout.check_run_name(run)
        assert accepted
    except ValueError:
        assert not accepted


def test_unfilled_placeholder_is_an_error(tmp_path):
    template = tmp_path / "t.sh"
    template.write_text('echo "@@BUCKET@@ @@NOT_A_SETTING@@"\n')
    with pytest.raises(ValueError, match="@@NOT_A_SETTING@@"):
        user_data.render(bucket="b", region="r", template=template)
