"""`launcher drill` end to end: real moto, real sshd, real tmux, real torchrun, the local Hub and IMDS.

The drill runs as a subprocess (the way a user runs it) with TMPDIR pointed at a directory of the test's, so
every process it starts carries that path in its command line or environment and every temporary file it
makes lives under it: both must be gone when it ends, also after Ctrl-C.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Small enough for CI, long enough for two notices at resnet18's CPU speed (see launcher/drill.py's planner).
CI_ARGS = ["--interruptions", "2", "--model", "resnet18", "--steps", "48"]
KEYS = {"ok": bool, "interruptions": int, "lost_steps": int, "weights_match_uninterrupted": bool,
        "notice_to_durable_s": list, "resume_s": list, "steps_total": int, "results_page": str}


def drill_env(tmp_path: Path) -> tuple[dict, Path]:
    scratch = tmp_path / "t"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "SPOT_RESNET_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("HF_TOKEN", None)
    return env, scratch


def drill_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher", "drill", *args]


def processes_mentioning(marker: str) -> list[str]:
    """This user's processes whose command line or environment contains `marker` (the drill's TMPDIR)."""
    found, needle = [], marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:  # exited meanwhile, or another user's
            continue
        if needle in cmdline or needle in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{name}: {command[:200]}")
    return found


def assert_nothing_left(scratch: Path) -> None:
    deadline = time.monotonic() + 10     # killed processes may take a moment to be reaped
    while processes_mentioning(str(scratch)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(scratch)) == []
    assert sorted(p.name for p in scratch.iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_short_drill_loses_no_step_and_ends_with_the_uninterrupted_weights(tmp_path):
    env, scratch = drill_env(tmp_path)
    out = subprocess.run(drill_argv(*CI_ARGS, "--json"), cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=460)
    (tmp_path / "drill.stderr").write_text(out.stderr)
    assert out.returncode == 0, out.stderr[-6000:] + out.stdout[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout             # exactly one JSON object on stdout
    result = json.loads(lines[0])
    for key, kind in KEYS.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert result["ok"] is True
    assert result["interruptions"] == 2
    assert result["lost_steps"] == 0
    assert result["weights_match_uninterrupted"] is True
    assert result["steps_total"] == 48
    assert len(result["notice_to_durable_s"]) == len(result["resume_s"]) == 2
    # the watcher polls every second; the checkpoint is durable within seconds of the signal
    assert all(isinstance(s, float) and 0 < s < 60 for s in result["notice_to_durable_s"])
    assert all(isinstance(s, float) and 0 < s < 180 for s in result["resume_s"])

    rows = result["details"]
    # instances alternate, every replacement is a fresh instance id, and resumes from the notice checkpoint
    assert [r["instance"] for r in rows] == ["instance A", "instance B"]
    assert [r["replacement"] for r in rows] == ["instance B", "instance A"]
    assert len({r["instance_id"] for r in rows} | {rows[-1]["replacement_id"]}) == 3
    for row in rows:
        assert row["resumed_from"] == row["checkpoint_step"] >= row["steps_before_notice"] > 0
    assert rows[0]["checkpoint_step"] < rows[1]["steps_before_notice"]

    page = Path(result["results_page"])
    assert page.parent == tmp_path / "home" / "drill" and page.is_file()
    html = page.read_text()
    assert "<svg" in html and "g6.xlarge" in html and "g5.xlarge" in html
    for instance_id in [r["instance_id"] for r in rows] + [rows[-1]["replacement_id"]]:
        assert instance_id in html                # every instance of the run is on its page

    assert_nothing_left(scratch)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_mid_training_ends_every_process_and_removes_every_temp_dir(tmp_path, how):
    """Ctrl-C in a terminal signals the whole process group (moto included); SIGTERM reaches the drill alone."""
    env, scratch = drill_env(tmp_path)
    with (tmp_path / "drill.stderr").open("w") as stderr:
        # its own process group, so the Ctrl-C reaches it the way a terminal delivers one: to the whole group
        proc = subprocess.Popen(drill_argv("--interruptions", "1", "--model", "resnet10", "--steps", "96"),
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            deadline = time.monotonic() + 200
            while not _training(scratch):
                assert proc.poll() is None, (tmp_path / "drill.stderr").read_text()[-4000:]
                assert time.monotonic() < deadline, "the drill never started training"
                time.sleep(0.5)
            running = processes_mentioning(str(scratch))
            # the check below can fail: right now sshd, tmux and the trainer ranks are all there
            assert any("sshd" in p for p in running) and any("job.train" in p for p in running), running
            if how == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(90) == 130
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert "interrupted" in (tmp_path / "drill.stderr").read_text()
    assert_nothing_left(scratch)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_drill_that_cannot_do_what_was_asked_says_how_and_leaves_nothing(tmp_path):
    """12 steps cannot hold 2 notices at resnet10's speed (each may take a watcher poll plus a step or two to
    land): the drill measures that in the first segment, fails with the fix, exit code 1, and still cleans up."""
    env, scratch = drill_env(tmp_path)
    out = subprocess.run(drill_argv("--interruptions", "2", "--model", "resnet10", "--steps", "12", "--json"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=220)
    assert out.returncode == 1, out.stderr[-4000:]
    result = json.loads(out.stdout)
    for key, kind in KEYS.items():
        assert key == "results_page" or isinstance(result[key], kind), (key, result[key])
    assert result["ok"] is False and result["results_page"] is None
    assert "use --steps" in result["error"]
    assert_nothing_left(scratch)


def _training(scratch: Path) -> bool:
    for path in scratch.glob("spot-drill-*/*/data/runs/drill/trainer.json"):
        try:
            if json.loads(path.read_text()).get("global_step", 0) >= 1:
                return True
        except (OSError, ValueError):
            continue
    return False


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet99"], "resnet50"),
    (["--steps", "6", "--interruptions", "3"], "--steps 16"),
    (["--interruptions", "-1"], "--interruptions"),
])
def test_bad_options_are_refused_before_anything_starts(tmp_path, args, message):
    env, scratch = drill_env(tmp_path)
    out = subprocess.run(drill_argv(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert sorted(p.name for p in scratch.iterdir()) == []
