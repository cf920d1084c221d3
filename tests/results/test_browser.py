"""The pages in a real browser (Debian's headless chromium): a run trained for real by torchrun + job.train on
the real-photo dataset, and the Lambda handler served over loopback HTTP with its real headers (CSP).

Screenshots for review land in tests/artifacts/: results-page.png (the trained run, wide),
results-page-phone.png (the same on a 390 px phone), results-page-demo.png (a longer multi-instance run).
"""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.results_site.runtime import handler, render, static
from job.runspec import RunSpec
from tests.results.browser import Chromium
from tests.results.conftest import url_event

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
TRAINED_RUN = "trained-run"
# resnet18 on 32 px crops, 4 steps per epoch, 2 epochs: a real run in seconds on CPU.
TINY_TRAIN = {"preset": "fast", "model": "resnet18", "epochs": 2, "warmup_epochs": 0.5, "global_batch": 16,
              "max_micro_batch": 16, "lr": 0.02, "resolution": 32, "workers": 0, "steps_per_epoch": 4, "log_every": 1,
              "eval_batch": 50, "checkpoint_every_min": 60, "keep_checkpoints": 1}
# (instance id, type, AZ, --max-steps): the first "instance" is stopped after step 5 as by a spot notice.
INSTANCES = [("i-0trained000000001", "g5.xlarge", "us-east-1a", 5), ("i-0trained000000002", "g4dn.xlarge", "us-east-1c", 0)]

CHARTS_JS = """[...document.querySelectorAll('svg.chart')].map(svg => ({
  width: svg.getBoundingClientRect().width,
  paths: [...svg.querySelectorAll('path.line')].map(p => ({d: p.getAttribute('d'), length: p.getTotalLength()})),
  markers: svg.querySelectorAll('g.marker').length}))"""


@pytest.fixture(scope="module")
def trained(site, hub_dataset, tmp_path_factory):
    """Run records from the real trainer: prepare the dataset, train on one "instance" until --max-steps, resume
    on another instance type to the end. The records go to the module's bucket on the moto server."""
    work = tmp_path_factory.mktemp("trained")
    source, _ = hub_dataset
    data = work / "prepared"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    subprocess.run([sys.executable, "-m", "job.prepare", "--source", str(source), "--out", str(data), "--workers", "1"],
                   check=True, cwd=REPO, env=env, capture_output=True, timeout=180)
    spec = RunSpec(run=TRAINED_RUN, bucket=site.bucket, train=TINY_TRAIN,
                   price_per_hour={"g5.xlarge": 0.4520, "g4dn.xlarge": 0.2104})
    spec.upload(site.s3)
    spec.save(work / "spec.json")
    for instance_id, instance_type, az, max_steps in INSTANCES:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "job.train",
               "--spec", str(work / "spec.json"), "--data", str(data), "--run-dir", str(work / "run")]
        cmd += ["--max-steps", str(max_steps)] if max_steps else []
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                                env={**env, "SPOT_INSTANCE_ID": instance_id, "SPOT_INSTANCE_TYPE": instance_type,
                                     "SPOT_AZ": az})
        assert result.returncode == 0, result.stderr[-3000:]
    return site


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    with Chromium(tmp_path_factory.mktemp("chromium") / "profile") as browser:
        yield browser


@contextmanager
def serve_lambda():
    """The handler behind a loopback HTTP server, translating requests to function URL events (payload 2.0)."""

    class Adapter(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query)) or None
            response = handler.handler(url_event(parts.path, self.command, query), None)
            body = response["body"].encode()
            self.send_response(response["statusCode"])
            for key, value in response["headers"].items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Adapter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def check_charts(page, expected: int, markers: int) -> None:
    found = page.evaluate(CHARTS_JS)
    assert len(found) == expected
    for chart in found:
        assert chart["width"] > 200
        assert chart["paths"] and all(p["d"].startswith("M") and p["length"] > 0 for p in chart["paths"])
    assert sum(c["markers"] for c in found) == markers


def test_harness_sees_console_errors_and_csp_violations(chromium, tmp_path):
    """Control: the same CSP as the real pages, plus an inline script and style attribute it must block."""
    bad = tmp_path / "bad.html"
    bad.write_text(render.page("bad", '<p style="color:red">x</p><script>console.error("boom")</script>'))
    page = chromium.page()
    try:
        page.open(bad.as_uri(), width=800, height=600)
        assert any("Content Security Policy" in p for p in page.problems), page.problems
        assert page.evaluate("document.querySelector('p').style.color") == ""  # the style attribute was refused
        page.evaluate("console.error('reported'); 1")
        page.settle(0.3)
        assert any("reported" in p for p in page.problems), page.problems
    finally:
        page.close()


def test_trained_run_page_in_chromium(trained, chromium, tmp_path):
    site = trained
    out = static.render_static(site.s3, site.bucket, TRAINED_RUN, tmp_path / "trained.html")
    page = chromium.page()
    try:
        page.open(out.as_uri(), width=1280, height=900)
        assert page.problems == []
        check_charts(page, expected=5, markers=3)  # one interruption on each of the three time charts
        text = page.evaluate("document.body.innerText")
        for expected in ("g5.xlarge", "g4dn.xlarge", "us-east-1a", "us-east-1c", "finished", "resnet18",
                         "Download the latest checkpoint"):
            assert expected in text
        assert page.evaluate("document.querySelectorAll('.notice').length") == 0
        shot = page.screenshot(ARTIFACTS / "results-page.png", width=1280)
        assert shot.stat().st_size > 20_000

        page.open(out.as_uri(), width=390, height=844, scale=2, mobile=True)
        assert page.problems == []
        # Readable on a phone: nothing wider than the screen (wide tables scroll inside their own box).
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        check_charts(page, expected=5, markers=3)
        assert all(c["width"] <= 390 for c in page.evaluate(CHARTS_JS))
        page.screenshot(ARTIFACTS / "results-page-phone.png", width=390)
    finally:
        page.close()


def test_served_pages_in_chromium(lambda_env, chromium):
    """Through HTTP, so the browser enforces the handler's real headers (Content-Security-Policy)."""
    page = chromium.page()
    try:
        with serve_lambda() as base:
            page.open(base + "/", width=1280, height=900)
            assert page.problems == []
            links = page.evaluate("[...document.querySelectorAll('table a')].map(a => a.getAttribute('href'))")
            assert {"/runs/demo-run", "/runs/live-run", "/runs/broken-run", "/runs/hostile-run"} <= set(links)

            page.open(base + "/runs/demo-run", width=1280, height=900)
            assert page.problems == []
            check_charts(page, expected=5, markers=6)
            page.screenshot(ARTIFACTS / "results-page-demo.png", width=1280)

            for run in ("broken-run", "hostile-run"):
                page.open(f"{base}/runs/{run}", width=1280, height=900)
                assert page.problems == []
                assert page.evaluate("document.querySelectorAll('.notice li').length") >= 1
                assert page.evaluate("document.scripts.length") == 0  # the hostile values stayed text

            page.open(base + "/runs/does-not-exist", width=1280, height=900)
            assert page.evaluate("document.querySelector('h1').textContent") == "404 · Run not found"
    finally:
        page.close()
