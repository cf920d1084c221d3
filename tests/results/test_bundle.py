"""The runtime folder works both ways it is imported: alone as the Lambda bundle (top-level modules, stdlib +
boto3 only) and as the package infra.results_site.runtime (launcher, drill), including the static writer."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.results_site.runtime import static

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "infra" / "results_site" / "runtime"

# What the Lambda Python runtime provides besides the standard library: boto3 and its dependencies.
LAMBDA_THIRD_PARTY = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six", "certifi"}

BUNDLE_PROBE = r"""
import json, os, sys
before = set(sys.modules)  # what the interpreter loaded at start-up (site hooks), not the bundle's doing
import handler  # exactly what the Lambda runtime does with handler="handler.handler"
event = {"version": "2.0", "rawPath": "/runs/demo-run", "requestContext": {"http": {"method": "GET"}}}
page = handler.handler(event, None)
api = handler.handler({**event, "rawPath": "/api/runs"}, None)
outside = sorted({name.split(".")[0] for name, module in list(sys.modules.items())
                  if name not in before and "site-packages" in (getattr(module, "__file__", None) or "")})
ours = sorted(name for name, module in list(sys.modules.items())
              if (getattr(module, "__file__", None) or "").startswith(os.getcwd()))
print(json.dumps({"status": page["statusCode"], "body": page["body"], "api": json.loads(api["body"]),
                  "site_packages": outside, "ours": ours,
                  "project": sorted(n for n in sys.modules if n.split(".")[0] in ("job", "launcher", "infra", "tests"))}))
"""


def test_bundle_runs_alone_as_top_level_modules(site, tmp_path):
    """Copy the folder as CDK's Code.from_asset would ship it and run the handler from there, in a fresh
    interpreter whose path holds nothing of this repository."""
    bundle = tmp_path / "bundle"
    shutil.copytree(RUNTIME, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    from job.testing.moto_server import FAKE_CREDENTIALS

    env.update(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=os.environ.get("AWS_ENDPOINT_URL") or site.s3.meta.endpoint_url,
               BUCKET_NAME=site.bucket, RECORDS_PREFIX="runs/")
    # -P: no script/cwd entry is prepended automatically; LAMBDA_TASK_ROOT-style path is given explicitly.
    result = subprocess.run([sys.executable, "-P", "-c", f"import sys; sys.path.insert(0, {str(bundle)!r})\n" + BUNDLE_PROBE],
                            cwd=bundle, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == 200 and "<h1>demo-run</h1>" in out["body"]
    assert {r["run"] for r in out["api"]["runs"]} == {"demo-run", "live-run", "hostile-run", "broken-run"}
    assert out["project"] == [], "the bundle imported code from outside its folder"
    assert set(out["site_packages"]) <= LAMBDA_THIRD_PARTY, out["site_packages"]
    assert {"handler", "runs", "summary", "charts", "render", "views"} <= set(out["ours"])


def test_static_cli_writes_a_page_via_the_package(site, tmp_path):
    out = tmp_path / "pages" / "demo.html"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": site.s3.meta.endpoint_url}
    cmd = [sys.executable, "-m", "infra.results_site.runtime.static", "--bucket", site.bucket, "--run", "demo-run",
           "--out", str(out)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    page = out.read_text()
    assert "<h1>demo-run</h1>" in page and page.count('<svg class="chart"') == 5
    assert 'href="/"' not in page and "/api/runs" not in page  # a file has no site around it to link to
    assert 'class="download"' in page and "X-Amz-Signature" in page

    missing = subprocess.run(cmd[:-4] + ["--run", "no-such-run", "--out", str(tmp_path / "x.html")], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "has no records of run 'no-such-run'" in missing.stderr
    assert not (tmp_path / "x.html").exists()
    invalid = subprocess.run(cmd[:-4] + ["--run", "../etc", "--out", str(tmp_path / "y.html")], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
    assert invalid.returncode == 2 and "is not valid" in invalid.stderr


def test_render_static_replaces_the_file_whole(site, tmp_path):
    out = tmp_path / "page.html"
    out.write_text("old page")
    path = static.render_static(site.s3, site.bucket, "live-run", out)
    assert path == out and "<h1>live-run</h1>" in out.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # no temporary file left behind
    with pytest.raises(LookupError, match="no records of run"):
        static.render_static(site.s3, site.bucket, "ghost", tmp_path / "ghost.html")
    assert not (tmp_path / "ghost.html").exists()
