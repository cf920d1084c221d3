"""HTML pages: the run list, one run's page, and error pages. Self-contained: one inline stylesheet, no
scripts, inline SVG charts. Every value from the records goes through `esc` (html.escape)."""
from __future__ import annotations

import base64
import hashlib
import html
import json
import time

if __package__:
    from . import charts, summary as summary_mod
else:  # top-level in the Lambda bundle
    import charts
    import summary as summary_mod

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--card:#f6f8fa;--line:#d1d9e0;--accent:#0969da;
--s0:#0969da;--s1:#bc4c00;--s2:#1a7f37;--s3:#8250df;--mark:#cf222e;--warn:#fff8c5;--warnline:#d4a72c}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--card:#151b23;
--line:#3d444d;--accent:#4493f8;--s0:#4493f8;--s1:#f0883e;--s2:#3fb950;--s3:#ab7df8;--mark:#f85149;--warn:#2e2a1a;--warnline:#9e6a03}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:12px 16px 40px}
a{color:var(--accent)}
h1{font-size:1.5rem;margin:.4em 0 .2em;overflow-wrap:anywhere}
h2{font-size:1.15rem;margin:1.6em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:.2em}
.sub{color:var(--muted);margin:0 0 1em}
nav{font-size:.9rem;color:var(--muted)}
.badge{display:inline-block;padding:.05em .55em;border-radius:1em;font-size:.85rem;border:1px solid var(--line);
background:var(--card);white-space:nowrap}
.st-running,.st-resumed,.st-training{border-color:var(--s0)}
.st-finished{border-color:var(--s2)}
.st-failed,.st-stalled{border-color:var(--mark)}
.st-interrupted,.st-resuming{border-color:var(--warnline)}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;margin:0;padding:0}
.facts div{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.facts dt{font-size:.8rem;color:var(--muted)}
.facts dd{margin:0;font-size:1.15rem;font-weight:600;overflow-wrap:anywhere}
.notice{background:var(--warn);border:1px solid var(--warnline);border-radius:6px;padding:8px 12px;margin:12px 0}
.notice ul{margin:.3em 0 0;padding-left:1.2em}
.notice li{overflow-wrap:anywhere}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:16px}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px}
figcaption{font-weight:600;margin:0 0 4px}
svg.chart{display:block;width:100%;height:auto}
svg .grid{stroke:var(--line);stroke-width:1}
svg .frame{fill:none;stroke:var(--muted);stroke-width:1}
svg .tick{fill:var(--muted);font-size:14px}
svg .axis-label{fill:var(--fg);font-size:15px}
svg .line{fill:none;stroke-width:2.2;stroke-linejoin:round;stroke-linecap:round}
svg .marker line{stroke:var(--mark);stroke-width:1.5;stroke-dasharray:5 4}
svg .marker .flag{fill:var(--mark)}
.s0{stroke:var(--s0)}.s1{stroke:var(--s1)}.s2{stroke:var(--s2)}.s3{stroke:var(--s3)}
circle.s0,.k0{fill:var(--s0);background:var(--s0)}circle.s1,.k1{fill:var(--s1);background:var(--s1)}
circle.s2,.k2{fill:var(--s2);background:var(--s2)}circle.s3,.k3{fill:var(--s3);background:var(--s3)}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.85rem;color:var(--muted);margin:4px 0 0;padding:0;list-style:none}
.legend i{display:inline-block;width:14px;height:4px;border-radius:2px;vertical-align:middle;margin-right:5px}
.legend i.km{background:none;border-top:2px dashed var(--mark);height:0}
.empty{color:var(--muted);font-style:italic}
.table{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;white-space:nowrap}
td{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap,.kv td{white-space:normal;overflow-wrap:anywhere}
td.wrap{min-width:26em}
.kv th{width:1%;white-space:nowrap}
@media (max-width:600px){.kv tr{display:block;border-bottom:1px solid var(--line);padding:3px 0}
.kv th,.kv td{display:block;width:auto;border:0;padding:1px 8px}}
.download{display:inline-block;padding:.45em .9em;border-radius:6px;background:var(--accent);color:#fff;
text-decoration:none;font-weight:600}
footer{margin-top:2em;font-size:.85rem;color:var(--muted)}
"""
# The page allows exactly this stylesheet and nothing else (no scripts, no remote loads at all).
_STYLE_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
                           "base-uri 'none'; form-action 'none'")


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_time(t) -> str:
    t = summary_mod.number(t)
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def fmt_duration(seconds) -> str:
    seconds = summary_mod.number(seconds)
    if seconds is None:
        return "—"
    s = int(round(max(0.0, seconds)))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def fmt_usd(value) -> str:
    value = summary_mod.number(value)
    return "—" if value is None else f"${value:,.2f}" if value >= 0.995 or value == 0 else f"${value:.3f}"


def fmt_pct(value) -> str:
    value = summary_mod.number(value)
    return "—" if value is None else f"{value:.2f} %"


def fmt_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def fmt_value(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "—" if value is None else str(value)


def page(title: str, body: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CONTENT_SECURITY_POLICY)}\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def badge(status: str) -> str:
    return f'<span class="badge st-{esc(status)}">{esc(status)}</span>'


def notices_html(notices: list[str]) -> str:
    if not notices:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notices)
    return (f'<div class="notice" role="status"><strong>Some records could not be read; the page shows the '
            f'rest.</strong><ul>{items}</ul></div>')


def table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "",
          wrap: set[int] = frozenset()) -> str:
    """Cells are already-escaped HTML. Cells stay on one line (the table scrolls sideways on a phone) except
    the free-text columns in `wrap`."""
    def attr(i: int) -> str:
        return " class=num" if i in numeric else " class=wrap" if i in wrap else ""

    head = "".join(f'<th{attr(i)}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{attr(i)}>{c}</td>' for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="table"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(fmt_value(v))}</code></td></tr>" for k, v in pairs)
    return f'<div class="table"><table class="kv"><tbody>{rows}</tbody></table></div>'


# ----- the run list -----

def list_page(summaries: list, notices: list[str] = (), *, now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for s in sorted(summaries, key=lambda s: s.updated or 0, reverse=True):
        rows.append([
            f'<a href="/runs/{esc(s.run)}">{esc(s.run)}</a>', badge(s.status), esc(s.model), esc(s.preset or "—"),
            esc(fmt_pct(s.best_top1)), esc(fmt_pct(s.best_top5)), esc(fmt_duration(s.elapsed_s)),
            esc(fmt_usd(s.cost_usd)), esc(len(s.interruptions)), esc(fmt_time(s.updated)),
        ])
    runs_html = (table(["run", "status", "model", "preset", "best top-1", "best top-5", "elapsed", "cost so far",
                        "interruptions", "updated"], rows, numeric={4, 5, 6, 7, 8})
                 if rows else '<p class="empty">No runs yet: start one with <code>launcher train</code>.</p>')
    body = (f"<h1>Training runs</h1><p class=\"sub\">{len(summaries)} run(s) · rendered {esc(fmt_time(now))} · "
            f"<a href=\"/api/runs\">JSON</a></p>{notices_html(list(notices))}{runs_html}")
    return page("Training runs", body)


# ----- one run -----

def _time_unit(span_s: float) -> tuple[float, str]:
    if span_s <= 180:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    if span_s <= 72 * 3600:
        return 3600.0, "h"
    return 86400.0, "d"


def _step_series(history, field: str, name: str, t0: float, unit: float) -> charts.Series:
    """One line per instance segment, so the gap of an interruption is not drawn over."""
    runs: dict[str, list] = {}
    for record in history.metrics:
        value = summary_mod.number(record.get(field))
        if record.get("type") == "step" and value is not None:
            runs.setdefault(record["_segment"], []).append(((record["time"] - t0) / unit, value))
    return charts.Series(name, list(runs.values()))


def _epoch_series(rows: list[dict], field: str, name: str, scale: float = 1.0) -> charts.Series:
    points = [(float(r["epoch"]), v * scale) for r in rows if (v := summary_mod.number(r.get(field))) is not None]
    return charts.Series(name, [points])


def _figure(chart_id: str, title: str, series: list, *, markers=(), **kwargs) -> str:
    svg = charts.line_chart(chart_id, title, series, markers=list(markers), **kwargs)
    if not svg:
        return f'<figure><figcaption>{esc(title)}</figcaption><p class="empty">No data yet.</p></figure>'
    legend = "".join(f'<li><i class="k{i % 4}"></i>{esc(s.name)}</li>' for i, s in enumerate(series) if s.points)
    if markers:
        legend += '<li><i class="km"></i>spot interruption</li>'
    return f'<figure><figcaption>{esc(title)}</figcaption>{svg}<ul class="legend">{legend}</ul></figure>'


def charts_html(history, s) -> str:
    rows = summary_mod.epoch_rows(history)
    scale = summary_mod.accuracy_scale(rows)
    t0 = s.started or 0.0
    unit, unit_name = _time_unit((s.updated or t0) - t0)
    markers = [charts.Marker((t - t0) / unit, f"spot interruption at {fmt_time(t)}") for t in s.interruptions]
    time_label = f"time since start ({unit_name})"
    figures = [
        _figure("loss", "Loss per epoch", [_epoch_series(rows, "train_loss", "train loss"),
                                           _epoch_series(rows, "val_loss", "validation loss")],
                x_label="epoch", y_label="cross-entropy loss", x_integer=True),
        _figure("acc", "Accuracy per epoch (validation)", [_epoch_series(rows, "top1", "top-1", scale),
                                                           _epoch_series(rows, "top5", "top-5", scale)],
                x_label="epoch", y_label="accuracy (%)", x_integer=True),
        _figure("steploss", "Training loss over time", [_step_series(history, "loss", "train loss (step)", t0, unit)],
                markers=markers, x_label=time_label, y_label="cross-entropy loss"),
        _figure("ips", "Throughput over time", [_step_series(history, "images_per_s", "images/s", t0, unit)],
                markers=markers, x_label=time_label, y_label="images per second"),
        _figure("lr", "Learning rate over time", [_step_series(history, "lr", "learning rate", t0, unit)],
                markers=markers, x_label=time_label, y_label="learning rate"),
    ]
    return f'<div class="charts">{"".join(figures)}</div>'


def facts_html(s) -> str:
    epochs = f"{s.epochs_done} / {s.epochs_total}" if s.epochs_total else str(s.epochs_done)
    current = s.segments[-1] if s.segments else None
    facts = [
        ("status", s.status), ("best top-1", fmt_pct(s.best_top1)), ("best top-5", fmt_pct(s.best_top5)),
        ("epochs", epochs), ("global step", "—" if s.global_step is None else f"{s.global_step:,}"),
        ("progress", "—" if s.progress is None else f"{s.progress * 100:.1f} %"),
        ("elapsed", fmt_duration(s.elapsed_s)), ("cost so far", fmt_usd(s.cost_usd)),
        ("projected total cost", fmt_usd(s.projected_cost_usd)),
        ("projected time left", "—" if s.state in summary_mod.TERMINAL_STATES else fmt_duration(s.projected_remaining_s)),
        ("interruptions", str(len(s.interruptions))),
        ("instance" if current and current.live else "last instance",
         " · ".join(v for v in (current.instance_type, current.az) if v) or "—" if current else "—"),
    ]
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    note = (f'<p class="sub">{s.unpriced_segments} segment(s) have no known price and are not in the cost.</p>'
            if s.unpriced_segments else "")
    return f'<dl class="facts">{items}</dl>{note}'


def segments_html(s) -> str:
    rows = [[esc(i + 1), esc(seg.instance_id or "—"), esc(seg.instance_type or "—"), esc(seg.az or "—"),
             esc("—" if seg.price_per_hour is None else f"${seg.price_per_hour:.4f}"), esc(fmt_time(seg.start)),
             esc(fmt_duration(seg.duration_s)), esc(fmt_usd(seg.cost_usd)), esc(seg.ended_by),
             f"<code>{esc(seg.id)}</code>"]
            for i, seg in enumerate(s.segments)]
    if not rows:
        return '<p class="empty">No instance has run this yet.</p>'
    # The segment id (where its records live in S3) goes last: the facts that matter fit a laptop screen.
    return table(["#", "instance", "type", "AZ", "spot $/h", "start", "duration", "cost", "ended by", "records"],
                 rows, numeric={0, 4, 6, 7})


_DATA_WORDS = ("resolution", "crop", "resize", "aug", "batch", "worker", "mixup", "cutmix", "erase",
               "flip", "jitter", "interpolation", "smoothing", "short_side", "ffcv", "loader")


def recipe_and_data_html(history, rows: list[dict]) -> str:
    spec = history.spec or {}
    train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
    recipe = [(k, train[k]) for k in sorted(train)]
    recipe += [(k, spec[k]) for k in ("nproc_per_node", "region") if k in spec]
    if "created" in spec:
        recipe.append(("created", fmt_time(spec["created"])))
    dataset = spec.get("dataset") if isinstance(spec.get("dataset"), dict) else {}
    data = [(f"dataset.{k}", dataset[k]) for k in sorted(dataset)]
    data += [(k, v) for k, v in recipe if any(w in k.lower() for w in _DATA_WORDS)]
    resolutions = [f"{r['epoch']}:{r['resolution']}" for r in rows if r.get("resolution") is not None]
    if resolutions:
        data.append(("resolution per epoch (epoch:px)", ", ".join(resolutions)))
    gpus = {(str(r.get("gpu")), str(r.get("gpus"))) for r in rows if r.get("gpu") is not None}
    if gpus:
        data.append(("GPUs seen", ", ".join(f"{n} × {g}" for g, n in sorted(gpus))))
    recipe_html = kv_table(recipe) if recipe else '<p class="empty">The run spec is missing: recipe unknown.</p>'
    data_html = kv_table(data) if data else '<p class="empty">The run spec is missing: data pipeline unknown.</p>'
    return f"<h2>Recipe</h2>{recipe_html}<h2>Data pipeline</h2>{data_html}"


_EVENT_SKIP = {"time", "type", "_segment", "instance_id", "instance_type", "az", "price_per_hour"}


def _detail(key: str, value) -> str:
    # *_time fields are epoch seconds from our writers, or an ISO string as the metadata service gives it
    # (the watcher's notice_time): show the string rather than "—".
    if key.endswith("_time") and summary_mod.number(value) is not None:
        return fmt_time(value)
    return fmt_value(value)


def events_html(history, limit: int = 40) -> str:
    recent = [e for e in history.events if e.get("type") != "step"][-limit:]
    rows = []
    for e in reversed(recent):
        what = e.get("state") if e.get("type") == "state" else e.get("type")
        details = " · ".join(f"{k}={_detail(k, v)}" for k, v in sorted(e.items())
                             if k not in _EVENT_SKIP and k != "state")
        rows.append([esc(fmt_time(e["time"])), esc(what), esc(e.get("instance_id") or "—"), esc(details)])
    if not rows:
        return '<p class="empty">No events yet.</p>'
    return table(["time", "event", "instance", "details"], rows, wrap={3})


def download_html(download: dict | None, latest: dict | None) -> str:
    if download:
        step = download.get("global_step")
        size = summary_mod.number(download.get("size"))
        meta = [f"step {step}" if step is not None else "", f"epoch {download['epoch']}" if download.get("epoch") is not None else "",
                fmt_bytes(size) if size else ""]
        meta = " · ".join(m for m in meta if m)
        return (f'<p><a class="download" href="{esc(download["url"])}" rel="noreferrer">Download the latest checkpoint</a> '
                f'<span class="sub">{esc(meta)} · <code>{esc(download["key"])}</code> · link expires '
                f'{esc(fmt_time(download["expires"]))}</span></p>')
    if latest:
        return '<p class="empty">A checkpoint exists but no download link could be made (see the notices).</p>'
    return '<p class="empty">No checkpoint yet.</p>'


def run_page(history, s, *, download: dict | None = None, now: float | None = None, static: bool = False) -> str:
    now = time.time() if now is None else now
    rows = summary_mod.epoch_rows(history)
    nav = "" if static else '<nav><a href="/">All runs</a></nav>'
    api = "" if static else f' · <a href="/api/runs/{esc(s.run)}">JSON</a>'
    sub = (f'{badge(s.status)} · {esc(s.model)} · preset {esc(s.preset or "—")} · started {esc(fmt_time(s.started))} · '
           f'last record {esc(fmt_time(s.updated))} · rendered {esc(fmt_time(now))}{api}')
    body = (f"{nav}<h1>{esc(s.run)}</h1><p class=\"sub\">{sub}</p>{notices_html(history.notices)}"
            f"{facts_html(s)}<h2>Checkpoint</h2>{download_html(download, history.latest_checkpoint)}"
            f"<h2>Curves</h2>{charts_html(history, s)}"
            f"<h2>Instance segments</h2>{segments_html(s)}{recipe_and_data_html(history, rows)}"
            f"<h2>Recent events</h2>{events_html(history)}"
            f"<footer>Times are UTC. Cost = Σ segment time × its spot price; the projection scales the cost so far "
            f"by the progress made.</footer>")
    return page(f"{s.run} · {s.status}", body)


def error_page(status: int, title: str, message: str) -> str:
    body = f'<nav><a href="/">All runs</a></nav><h1>{esc(status)} · {esc(title)}</h1><p>{esc(message)}</p>'
    return page(f"{status} {title}", body)
