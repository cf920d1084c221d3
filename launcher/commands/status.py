"""`launcher status`: the instance(s) and their spot price, the run's progress, interruptions and cost.

Reads AWS (stack, group, EC2, spot price history) and the run records in S3; never needs SSH, so it works
while an instance is being replaced.
"""
from __future__ import annotations

from pathlib import Path

from launcher import cost
from launcher.config import RunConfig
from launcher.deployment import Deployment
from launcher.errors import LauncherError


def status(config: RunConfig) -> dict:
    deployment = Deployment(config)
    result: dict = {"run": config.name, "stack": config.stack_name, "region": config.region,
                    "deployed": deployment.deployed, "bucket": None, "site_url": deployment.site_url,
                    "auto_scaling_group": deployment.asg_name, "instances": [], "progress": None}
    if not deployment.deployed and not config.bucket_name:
        return result
    result["bucket"] = deployment.bucket

    if deployment.asg_name:
        members = {m["instance_id"]: m for m in deployment.aws.group_instances(deployment.asg_name)}
        for inst in deployment.aws.instances(list(members)):
            row = {**inst.to_dict(), "group_state": members[inst.instance_id]["lifecycle_state"],
                   "spot_price_per_hour": deployment.aws.spot_price(inst.instance_type, inst.az)}
            result["instances"].append(row)

    result["progress"] = cost.run_report(deployment.s3, deployment.bucket, config.name)
    return result


def write_html(config: RunConfig, out_path: Path) -> Path:
    """The results page of this run as one HTML file, by the results site's own renderer."""
    try:
        from infra.results_site.runtime.static import render_static
    except ImportError as exc:
        raise LauncherError(f"the results page renderer (infra/results_site/runtime/static.py) is not "
                            f"available in this installation: {exc}") from None
    deployment = Deployment(config)
    try:
        return render_static(deployment.s3, deployment.bucket, config.name, out_path)
    except (ValueError, LookupError) as exc:
        raise LauncherError(str(exc)) from None


# ----------------------------------------------------------------------------------------------- text
def _hms(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _usd(value) -> str:
    return "—" if value is None else f"${value:,.2f}"


def render(result: dict):
    """A rich renderable of `status()`'s result."""
    from rich.console import Group
    from rich.table import Table

    parts = []
    head = Table.grid(padding=(0, 2))
    head.add_row("run", result["run"])
    head.add_row("stack", f"{result['stack']} ({result['region']}) " + ("deployed" if result["deployed"] else "not deployed"))
    if result.get("bucket"):
        head.add_row("bucket", result["bucket"])
    if result.get("site_url"):
        head.add_row("results", result["site_url"])
    parts.append(head)
    if result["instances"]:
        table = Table(title="instances", title_justify="left")
        for col in ("instance", "type", "AZ", "lifecycle", "state", "spot $/h"):
            table.add_column(col)
        for inst in result["instances"]:
            price = inst.get("spot_price_per_hour")
            table.add_row(inst["instance_id"], inst["instance_type"], inst["az"], inst["lifecycle"],
                          f"{inst['state']} / {inst['group_state']}", "—" if price is None else f"{price:.4f}")
        parts.append(table)
    elif result["deployed"]:
        parts.append("no instance in the group right now (spot capacity is being sought)")
    prog = result.get("progress")
    if prog:
        table = Table.grid(padding=(0, 2))
        epochs = f"/{prog['epochs_total']}" if prog.get("epochs_total") else ""
        steps = f"/{prog['total_steps']}" if prog.get("total_steps") else ""
        table.add_row("state", prog["status"] if prog["status"] == prog["state"] else f"{prog['status']} ({prog['state']})")
        table.add_row("epoch", f"{prog['epoch'] if prog.get('epoch') is not None else '—'}{epochs}")
        table.add_row("step", f"{prog['global_step'] if prog.get('global_step') is not None else '—'}{steps}")
        ips = prog.get("images_per_s")
        table.add_row("images/s", "—" if ips is None else f"{ips:,.0f}")
        table.add_row("ETA", _hms(prog.get("eta_s")))
        top1 = prog.get("best_top1")
        table.add_row("best top-1", "—" if top1 is None else f"{top1:.2f}%")
        table.add_row("interruptions", str(prog["interruptions"]))
        unpriced = f" ({prog['unpriced_segments']} instance(s) without a price)" if prog.get("unpriced_segments") else ""
        table.add_row("cost so far", _usd(prog.get("cost_usd")) + unpriced)
        table.add_row("projected", _usd(prog.get("projected_cost_usd")))
        parts.append(table)
        for notice in prog.get("record_notices") or []:
            parts.append(f"[yellow]note:[/] {notice}")
    return Group(*parts)
