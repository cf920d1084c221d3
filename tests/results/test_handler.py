"""The Lambda handler, invoked with function URL events (payload 2.0) against run records on a moto server."""
from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import pytest

from job import layout
from tests.results.conftest import invoke
from tests.results.sample_runs import HOSTILE

pytestmark = pytest.mark.usefixtures("lambda_env")


def chart_paths(body: str) -> list[str]:
    return re.findall(r'<path class="line s\d" d="([^"]*)"', body)


def test_list_page_shows_every_run_with_its_facts(lambda_env):
    site = lambda_env
    response = invoke("/")
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "text/html; charset=utf-8"
    body = response["body"]
    for run in ("demo-run", "live-run", "hostile-run", "broken-run"):
        assert f'<a href="/runs/{run}">{run}</a>' in body
    demo_row = body[body.index('href="/runs/demo-run"'):].split("</tr>")[0]
    best_top1 = max(e["top1"] for e in site.demo.epochs) * 100
    assert "finished" in demo_row and f"{best_top1:.2f} %" in demo_row
    assert f"${site.demo.cost():.3f}" in demo_row
    live_row = body[body.index('href="/runs/live-run"'):].split("</tr>")[0]
    assert "resumed" in live_row  # training again after an interruption
    # The damaged run is listed, with a pointer to its notices rather than an error page.
    assert "run broken-run:" in body and "notice" in body


def test_run_page_shows_facts_charts_segments_recipe_and_link(lambda_env):
    site = lambda_env
    response = invoke("/runs/demo-run")
    assert response["statusCode"] == 200
    body = response["body"]
    assert "<h1>demo-run</h1>" in body
    # Five charts, each with a drawn line, and the two interruptions marked on the three time charts.
    assert body.count('<svg class="chart"') == 5
    paths = chart_paths(body)
    assert len(paths) == 7 and all(d.startswith("M") and len(d) > 20 for d in paths)
    assert body.count('<g class="marker">') == 3 * len(site.demo.interruptions) == 6
    assert "time since start (min)" in body and "accuracy (%)" in body and "images per second" in body
    # One row per instance segment with its type, AZ and price.
    for seg in site.demo.segments:
        assert f"<code>{seg['id']}</code>" in body
        assert seg["type"] in body and seg["az"] in body and f"${seg['price']:.4f}" in body
    assert "<dt>interruptions</dt><dd>2</dd>" in body
    assert f"<dt>cost so far</dt><dd>${site.demo.cost():.3f}</dd>" in body
    # Recipe and data pipeline come from the spec.
    assert "<th>global_batch</th><td><code>1024</code></td>" in body
    assert "ILSVRC/imagenet-1k" in body and "resolution per epoch" in body
    # The presigned link downloads exactly the checkpoint that latest.json names, and expires in 15 min.
    url = re.search(r'<a class="download" href="([^"]+)"', body).group(1).replace("&amp;", "&")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["900"]
    assert urllib.parse.urlsplit(url).path.endswith(site.demo.checkpoint_key)
    with urllib.request.urlopen(url, timeout=10) as download:
        assert download.read() == site.demo.checkpoint_body


def test_json_view_for_tools(lambda_env):
    site = lambda_env
    response = invoke("/api/runs/demo-run")
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    data = json.loads(response["body"])
    summary = data["summary"]
    assert data["run"] == "demo-run" and summary["status"] == "finished"
    assert summary["best_top1"] == pytest.approx(max(e["top1"] for e in site.demo.epochs) * 100)
    assert summary["best_top5"] == pytest.approx(max(e["top5"] for e in site.demo.epochs) * 100)
    assert summary["cost_usd"] == pytest.approx(site.demo.cost(), rel=1e-9)
    assert summary["interruptions"] == pytest.approx(site.demo.interruptions)
    assert [s["instance_type"] for s in summary["segments"]] == [s["type"] for s in site.demo.segments]
    assert [s["ended_by"] for s in summary["segments"]] == ["interrupted", "interrupted", "finished"]
    assert [e["epoch"] for e in data["epochs"]] == [e["epoch"] for e in site.demo.epochs]
    assert data["last_step"]["global_step"] == site.demo.steps[-1]["global_step"]
    assert data["checkpoint"]["key"] == site.demo.checkpoint_key and "X-Amz-Signature" in data["checkpoint"]["url"]
    assert data["spec"]["train"]["preset"] == "fast" and data["notices"] == []


def test_json_list(lambda_env):
    response = invoke("/api/runs")
    assert response["statusCode"] == 200
    runs = {r["run"]: r for r in json.loads(response["body"])["runs"]}
    assert set(runs) == {"demo-run", "live-run", "hostile-run", "broken-run"}
    assert runs["demo-run"]["status"] == "finished" and runs["demo-run"]["interruptions"] == 2
    assert runs["live-run"]["status"] == "resumed" and runs["hostile-run"]["status"] == "failed"


@pytest.mark.parametrize("path", ["/nope", "/runs", "/runs/demo-run/extra", "/api", "/api/runs/demo-run/x",
                                  "/favicon.ico", "//runs/demo-run"])
def test_unknown_paths_get_a_404_page(path):
    response = invoke(path)
    assert response["statusCode"] == 404
    assert response["headers"]["cache-control"] == "no-store"
    if path.startswith("/api/"):  # tools get a JSON error
        assert json.loads(response["body"])["error"] == "Not found"
    else:
        assert "404 · Not found" in response["body"] and '<a href="/">All runs</a>' in response["body"]


def test_unknown_run_is_a_404_in_html_and_json():
    page = invoke("/runs/no-such-run")
    assert page["statusCode"] == 404 and "No run named no-such-run" in page["body"]
    api = invoke("/api/runs/no-such-run")
    assert api["statusCode"] == 404 and json.loads(api["body"])["error"] == "Run not found"


@pytest.mark.parametrize("run_id", ["..", "%2e%2e", "%2E%2E", ".", "Demo-Run", "UPPER", "a" * 64, "-lead",
                                    "a%2Fb", "a%2f..%2fb", "demo_run", "demo.run", "%00", "a b", "demo-run%0a"])
def test_invalid_run_ids_are_rejected_before_any_s3_read(run_id):
    for prefix, api in (("/runs/", False), ("/api/runs/", True)):
        response = invoke(prefix + run_id)
        assert response["statusCode"] == 400, (prefix, run_id)
        assert response["headers"]["cache-control"] == "no-store"
        message = json.loads(response["body"])["message"] if api else response["body"]
        assert "1-63 lowercase letters" in message
        assert "demo-run" not in message.replace(run_id, "")  # nothing of another run leaks


@pytest.mark.parametrize("path", ["/runs/../runs/demo-run", "/runs/a/b", "/runs/demo-run/../../checkpoints",
                                  "/api/runs/../../secret"])
def test_traversal_paths_with_slashes_do_not_route(path):
    response = invoke(path)
    assert response["statusCode"] in (400, 404)
    assert "<h1>demo-run</h1>" not in response["body"]


def _assert_no_live_markup(body: str):
    lowered = body.lower()
    for raw in ("<script", "<img", "<svg onload", "<i>resnet", "<b>bold"):
        assert raw not in lowered, raw


def test_hostile_values_are_escaped_everywhere(lambda_env):
    run_page = invoke("/runs/hostile-run")["body"]
    _assert_no_live_markup(run_page)
    assert run_page.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 4  # preset, note, message, error
    assert "&lt;img src=x onerror=alert(1)&gt;" in run_page
    assert "&quot;&gt;&lt;svg onload=alert(2)&gt;" in run_page
    list_page = invoke("/")["body"]
    _assert_no_live_markup(list_page)
    assert "&lt;i&gt;resnet&lt;/i&gt;" in list_page
    # The JSON view carries the values verbatim, as data.
    data = json.loads(invoke("/api/runs/hostile-run")["body"])
    assert data["spec"]["train"]["note"] == HOSTILE
    # The path itself is escaped on the 404 page.
    not_found = invoke("/<script>alert(1)</script>")
    assert not_found["statusCode"] == 404
    _assert_no_live_markup(not_found["body"])


def test_checkpoint_pointer_outside_the_run_gets_no_link(lambda_env):
    body = invoke("/runs/hostile-run")["body"]
    assert 'class="download"' not in body
    assert "is not a checkpoint of this run" in body


def test_malformed_records_render_with_notices(lambda_env):
    site = lambda_env
    response = invoke("/runs/broken-run")
    assert response["statusCode"] == 200
    body = response["body"]
    notices = re.search(r'<div class="notice".*?</div>', body, re.S).group(0)
    first, second = site.broken.segments[0]["id"], site.broken.segments[1]["id"]
    assert f"{layout.metrics_key('broken-run', first)}: skipped 5 malformed line(s)" in notices
    assert f"{layout.events_key('broken-run', second)}: skipped 1 malformed line(s)" in notices
    assert "runs/broken-run/spec.json: not valid JSON" in notices
    assert "runs/broken-run/state.json: expected a JSON object" in notices
    # The valid records around the damage are still drawn, and the NaN/inf values are not.
    paths = chart_paths(body)
    assert len(paths) == 7 and all(d.startswith("M") for d in paths)
    assert not any(bad in " ".join(paths).lower() for bad in ("nan", "inf"))
    assert "The run spec is missing: recipe unknown." in body
    assert "1 segment(s) have no known price" in body
    data = json.loads(invoke("/api/runs/broken-run")["body"])
    assert len(data["notices"]) >= 4


def test_cache_and_security_headers(lambda_env):
    finished = invoke("/runs/demo-run")["headers"]
    live = invoke("/runs/live-run")["headers"]
    listing = invoke("/")["headers"]
    api = invoke("/api/runs/live-run")["headers"]
    assert finished["cache-control"] == "private, max-age=300"
    assert live["cache-control"] == listing["cache-control"] == "private, max-age=30"
    assert api["cache-control"] == "no-store"
    for headers in (finished, live, listing, api):
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp


def test_live_run_counts_its_running_instance(lambda_env):
    site = lambda_env
    data = json.loads(invoke("/api/runs/live-run")["body"])
    summary = data["summary"]
    live_segment = summary["segments"][-1]
    assert live_segment["live"] and live_segment["ended_by"] == "running"
    assert live_segment["end"] > site.live.segments[-1]["end"]  # billed up to now, not to its last record
    assert summary["cost_usd"] > site.live.cost()
    assert 0 < summary["progress"] < 1
    assert summary["projected_cost_usd"] == pytest.approx(summary["cost_usd"] / summary["progress"])
    body = invoke("/runs/live-run")["body"]
    assert "<dt>instance</dt><dd>g6.xlarge · us-east-1f</dd>" in body


def test_head_and_other_methods():
    head = invoke("/runs/demo-run", method="HEAD")
    assert head["statusCode"] == 200 and head["body"] == ""
    assert head["headers"]["cache-control"] == "private, max-age=300"
    post = invoke("/runs/demo-run", method="POST")
    assert post["statusCode"] == 405 and post["headers"]["allow"] == "GET, HEAD"


def test_query_strings_are_ignored():
    response = invoke("/runs/demo-run", query={"x": "<script>"})
    assert response["statusCode"] == 200 and "<script" not in response["body"].lower()


def test_missing_configuration_names_the_fix(monkeypatch):
    monkeypatch.setenv("RECORDS_PREFIX", "/runs")
    response = invoke("/")
    assert response["statusCode"] == 500 and "must be a relative S3 prefix ending in &#x27;/&#x27;" in response["body"]
    monkeypatch.delenv("BUCKET_NAME")
    response = invoke("/")
    assert response["statusCode"] == 500 and "BUCKET_NAME is not set" in response["body"]


def test_s3_failure_is_a_502_page_not_a_crash(monkeypatch):
    monkeypatch.setenv("BUCKET_NAME", "no-such-bucket-for-results")
    response = invoke("/")
    assert response["statusCode"] == 502
    assert "NoSuchBucket" in response["body"] and response["headers"]["cache-control"] == "no-store"
    api = invoke("/api/runs/demo-run")
    assert api["statusCode"] == 502 and json.loads(api["body"])["error"] == "Run records unavailable"
