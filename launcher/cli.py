"""The `launcher` command line: parses and prints; launcher.commands.* does the work.

Only click is imported at start-up (`launcher --help` stays fast); boto3, fabric, rich and the command
modules are imported by the command that needs them.
"""
from __future__ import annotations

import functools
import json
import sys

import click

CONFIG_HELP = "the run's TOML config (see examples/run.toml)"


def config_option(fn):
    return click.option("-c", "--config", "config_path", default="run.toml", show_default=True,
                        envvar="LAUNCHER_CONFIG", type=click.Path(dir_okay=False), help=CONFIG_HELP)(fn)


def handle_errors(fn):
    """LauncherError/ConfigError → one message on stderr and their exit code, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from launcher.errors import LauncherError

        try:
            return fn(*args, **kwargs)
        except LauncherError as exc:
            kind = "config error" if exc.exit_code == 2 else "error"
            click.secho(f"{kind}: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except TimeoutError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.secho("interrupted: every step is safe to re-run", fg="yellow", err=True)
            sys.exit(130)
    return wrapper


def load_config(path: str):
    from launcher import config

    return config.load(path)


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spot-resnet", message="%(version)s")
def main():
    """Train ResNet-50 on ImageNet-1K on AWS GPU spot instances, from your laptop.

    \b
    launcher up        deploy the stack and wait for an instance
    launcher train     start the run (package and spec to S3, bootstrap on the instance)
    launcher status    instance, progress, interruptions, cost
    launcher logs -f   follow the training log
    launcher teardown  final checkpoint, destroy, prove nothing billable is left
    """


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def up(config_path, as_json):
    """Deploy the stack (cdk deploy), wait for an instance that answers SSH, add `Host <run>` to ~/.ssh."""
    from launcher.commands.up import up as run_up

    config = load_config(config_path)
    result = run_up(config)
    if as_json:
        return print_json(result)
    if result.get("site_url"):
        click.echo(f"results page: {result['site_url']}")
    if result.get("ssh_alias"):
        click.echo(f"ssh:          ssh {result['ssh_alias']}")
    click.echo(f"next:         launcher train --config {config_path}")


@main.command()
@config_option
@click.option("--force", is_flag=True, help="start even if the instance or bucket is busy with another run")
@click.option("-f", "--follow", is_flag=True, help="stream the log after starting")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def train(config_path, force, follow, as_json):
    """Package the job, store it and the run spec in S3, push it to the instance and start the run in tmux."""
    from launcher.commands.train import train as run_train

    config = load_config(config_path)
    result = run_train(config, force=force)
    if as_json:
        print_json(result)
    else:
        click.echo(f"run {result['run']}: {result['bootstrap'].get('action')} on {result['host']}")
        click.echo(f"next: launcher logs -f --config {config_path}   |   launcher status --config {config_path}")
    if follow:
        from launcher.commands.logs import follow as run_follow

        run_follow(config)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="also write the results page here")
@handle_errors
def status(config_path, as_json, html_path):
    """Instance type, AZ, spot price; epoch, step, images/s, ETA, best top-1; interruptions; cost."""
    from launcher.commands import status as cmd

    config = load_config(config_path)
    result = cmd.status(config)
    if html_path:
        result["html"] = str(cmd.write_html(config, html_path))
    if as_json:
        return print_json(result)
    from rich.console import Console

    Console().print(cmd.render(result))
    if html_path:
        click.echo(f"results page written to {result['html']}")


@main.command()
@config_option
@click.option("-f", "--follow", is_flag=True, help="stream until the run's tmux session ends; reconnects on drops")
@click.option("-n", "--lines", default=100, show_default=True, help="lines of history to show first")
@click.option("--reconnect-s", default=30.0, show_default=True, help="how long -f tries to reconnect after a drop")
@handle_errors
def logs(config_path, follow, lines, reconnect_s):
    """The run's log on the instance (or its tmux pane)."""
    from launcher.commands import logs as cmd

    config = load_config(config_path)
    if follow:
        cmd.follow(config, lines=lines, reconnect_window_s=reconnect_s)
    else:
        click.echo(cmd.tail(config, lines=lines), nl=False)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def resume(config_path, as_json):
    """Resume the run on the current instance from its latest valid checkpoint (the relaunch path)."""
    from launcher.commands.resume import resume as run_resume

    result = run_resume(load_config(config_path))
    if as_json:
        return print_json(result)
    click.echo(f"run {result['run']}: {result['bootstrap'].get('action')} on {result['host']}")


@main.command(context_settings={"ignore_unknown_options": True})
@config_option
@click.option("--attach", is_flag=True, help="attach to the run's tmux session (detach: Ctrl-b d)")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def ssh(config_path, attach, command):
    """Open a shell on the instance, attach to the run's tmux session, or run COMMAND (after --)."""
    from launcher.commands import ssh as cmd

    cmd.exec_ssh(cmd.ssh_argv(load_config(config_path), attach=attach, command=tuple(command)))


@main.command()
@config_option
@click.option("--keep-data", is_flag=True, help="keep the bucket even if the config says retain = false")
@click.option("--no-checkpoint", is_flag=True, help="do not take a final checkpoint of a live run")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--leftover-wait-s", default=300.0, show_default=True,
              help="how long to wait for instances to finish terminating before reporting them")
@handle_errors
def teardown(config_path, keep_data, no_checkpoint, yes, as_json, leftover_wait_s):
    """Final checkpoint, cdk destroy, delete the Hub token; then prove nothing billable is left."""
    from launcher.commands.teardown import teardown as run_teardown

    def confirm(question: str) -> bool:
        return yes or click.confirm(question, default=False, err=True)

    result = run_teardown(load_config(config_path), keep_data=keep_data, checkpoint=not no_checkpoint,
                          confirm=confirm, leftover_timeout_s=leftover_wait_s)
    left = {k: v for k, v in (result["leftovers"] or {}).items() if v}
    if as_json:
        print_json(result)
    else:
        if left:
            click.secho("STILL BILLABLE:", fg="red", err=True)
            for kind, items in left.items():
                for item in items:
                    click.secho(f"  {kind}: {item}", fg="red", err=True)
        else:
            click.secho("Nothing billable is left: no instances, volumes, spot requests or group of this stack.",
                        fg="green")
        if result.get("bucket"):
            click.echo(f"bucket {result['bucket']}: " + ("kept (your data and checkpoints)" if result["bucket_kept"]
                                                         else "deleted"))
    if left:
        sys.exit(1)


@main.command(add_help_option=False, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@handle_errors
def drill(ctx):
    """The whole chain on this machine, interruptions included (no AWS account needed)."""
    try:
        from launcher import drill as drill_module
    except ImportError as exc:
        from launcher.errors import LauncherError

        raise LauncherError(f"the local drill is not available in this checkout (launcher/drill.py: {exc})") from None
    entry = getattr(drill_module, "main", None)
    if entry is None:
        from launcher.errors import LauncherError

        raise LauncherError("launcher/drill.py has no main(argv) entry point")
    sys.exit(entry(list(ctx.args)))


if __name__ == "__main__":
    main()
