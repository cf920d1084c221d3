"""Write a run's page as one self-contained HTML file (the drill, `launcher status --html`).

    python -m infra.results_site.runtime.static --bucket B --run R --out page.html
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__:
    from . import runs, views
else:  # top-level in the Lambda bundle
    import runs
    import views


def render_static(s3, bucket: str, run: str, out_path, *, prefix: str = runs.DEFAULT_RECORDS_PREFIX,
                  now: float | None = None, link_expiry_s: int = views.LINK_EXPIRY_S) -> Path:
    """Render run `run` to `out_path` (written atomically) and return the path.

    Raises ValueError for an invalid run id and LookupError when the bucket has no records of the run.
    """
    now = time.time() if now is None else now
    page = views.run_view(s3, bucket, run, prefix=prefix, now=now, link_expiry_s=link_expiry_s)
    if not page.exists:
        raise LookupError(f"bucket {bucket} has no records of run {run!r} under {prefix}{run}/: "
                          "check the run name (`launcher status` lists the runs)")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees half a page.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page.html(now=now, static=True))
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a training run's results page to a static HTML file.")
    parser.add_argument("--bucket", required=True, help="the stack's bucket (output 'Bucket')")
    parser.add_argument("--run", required=True, help="run name")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--prefix", default=runs.DEFAULT_RECORDS_PREFIX, help="run records prefix (default: runs/)")
    args = parser.parse_args(argv)
    if __package__:
        from .handler import s3_client
    else:
        from handler import s3_client
    try:
        out = render_static(s3_client(), args.bucket, args.run, args.out, prefix=args.prefix)
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
