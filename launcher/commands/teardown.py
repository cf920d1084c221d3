"""`launcher teardown`: final checkpoint if a run is live, `cdk destroy`, the SSM token, then prove nothing
billable is left (instances, unattached volumes, open spot requests, the group itself).

The bucket (datasets, checkpoints, run records) is kept unless the config says `[bucket] retain = false`,
and `--keep-data` keeps it even then.
"""
from __future__ import annotations

import time
from typing import Callable

from job import layout
from launcher import cdk, progress, sshconfig
from launcher.commands.up import region_zones
from launcher.config import RunConfig
from launcher.connection import UnreachableError
from launcher.deployment import Deployment
from launcher.errors import LauncherError

LIVE_TRAINER_STATES = ("starting", "training", "checkpointing")
LIVE_RUN_STATES = ("created", "preparing", "training", "resuming")
# `cdk destroy` synthesises the app, which needs some operator_cidr; the security group is deleted moments
# later, so an address from the documentation range (RFC 5737) is used rather than asking for the caller's IP.
DESTROY_CIDR = "192.0.2.1/32"


def final_checkpoint(deployment: Deployment, *, timeout_s: float = 900, poll_s: float = 2.0) -> dict | None:
    """If the run trains on the instance: SIGUSR1, then wait until its checkpoint is durable in S3.

    Returns {"global_step", "key"} of the durable checkpoint, or None when no run was live.
    """
    run = deployment.config.name
    remote = deployment.connect()
    try:
        trainer = remote.trainer_state(run) or {}
        if not remote.has_session(run) or trainer.get("state") not in LIVE_TRAINER_STATES:
            return None
        before = (trainer.get("last_durable") or {}).get("global_step", -1)
        pids = remote.signal_trainer(run, "USR1")
        if not pids:
            raise LauncherError(f"run {run} looks live but no trainer pid answers in {remote.run_dir(run)}/pids: "
                                "its last durable checkpoint is kept; pass --no-checkpoint to tear down anyway")
        progress.step(f"SIGUSR1 sent to trainer pid(s) {', '.join(map(str, pids))}: checkpointing")

        def durable():
            state = remote.trainer_state(run) or {}
            last = state.get("last_durable") or {}
            if state.get("state") in ("interrupted", "finished") and last.get("global_step", -1) >= before:
                return last
            if state.get("state") == "failed":
                raise LauncherError(f"the trainer failed while checkpointing; the last durable checkpoint "
                                    f"(step {before}) is in s3://{deployment.bucket}")
            return None

        last = progress.wait_until(durable, what="the final checkpoint to be durable in S3", timeout=timeout_s,
                                   interval=poll_s)
    finally:
        remote.conn.close()
    from job.s3 import get_json

    pointer = get_json(deployment.s3, deployment.bucket, layout.latest_checkpoint_key(run)) or {}
    if pointer.get("global_step", -1) < last.get("global_step", 0):
        raise LauncherError(f"the trainer reports step {last.get('global_step')} durable, but "
                            f"s3://{deployment.bucket}/{layout.latest_checkpoint_key(run)} says "
                            f"{pointer.get('global_step')}: not destroying anything; check the bucket")
    progress.done(f"final checkpoint durable: step {pointer['global_step']} at s3://{deployment.bucket}/{pointer.get('key')}")
    return {"global_step": pointer["global_step"], "key": pointer.get("key")}


def teardown(config: RunConfig, *, keep_data: bool = False, checkpoint: bool = True,
             confirm: Callable[[str], bool] = lambda _question: True, leftover_timeout_s: float = 300,
             poll_s: float = 5.0) -> dict:
    deployment = Deployment(config)
    result: dict = {"stack": config.stack_name, "final_checkpoint": None, "destroyed": False, "token_deleted": False,
                    "leftovers": None, "bucket": None, "bucket_kept": True}
    asg_name = deployment.asg_name
    bucket = deployment.bucket if (deployment.deployed or config.bucket_name) else None
    result["bucket"] = bucket

    if checkpoint and bucket:
        from job.records import read_state

        state = (read_state(deployment.s3, bucket, config.name) or {}).get("state")
        if state in LIVE_RUN_STATES and confirm(f"Run {config.name} is {state}: take a final checkpoint first?"):
            try:
                result["final_checkpoint"] = final_checkpoint(deployment)
            except UnreachableError as exc:
                from job.s3 import get_json

                latest = get_json(deployment.s3, bucket, layout.latest_checkpoint_key(config.name)) or {}
                raise LauncherError(
                    f"run {config.name} is {state} but its instance cannot be reached for a final checkpoint: {exc} "
                    f"Its latest durable checkpoint (step {latest.get('global_step', 'none')}) stays in s3://{bucket}. "
                    "Pass --no-checkpoint to tear down without a final one.") from None

    delete_bucket = not config.retain_bucket and not keep_data
    question = (f"Destroy stack {config.stack_name} in {config.region}"
                + (f" AND DELETE the bucket {bucket} with its checkpoints and data" if delete_bucket else
                   f" (the bucket {bucket} is kept)" if bucket else "") + "?")
    if not confirm(question):
        raise LauncherError("teardown cancelled: nothing was destroyed")

    context = config.cdk_context(DESTROY_CIDR)
    if deployment.deployed:
        if not config.retain_bucket and keep_data:
            # The deployed template deletes the bucket with the stack: switch it to retained first.
            progress.step("switching the bucket to retained before destroying (--keep-data)")
            # The same zones as `launcher up` gave: otherwise this update would try to delete subnets in use.
            zones = region_zones(config, deployment.aws)
            cdk.deploy({**config.cdk_context(DESTROY_CIDR, zones), "destroy_bucket": "false"},
                       _outputs_file(config), region=config.region)
            context["destroy_bucket"] = "false"
        cdk.destroy(context, region=config.region)
        result["destroyed"] = True
        progress.done(f"stack {config.stack_name} destroyed")
    else:
        progress.info(f"stack {config.stack_name} is not deployed in {config.region}: nothing to destroy")

    result["token_deleted"] = deployment.aws.delete_secret(config.hf_token_parameter)
    progress.done(f"SSM parameter {config.hf_token_parameter} " + ("deleted" if result["token_deleted"] else "absent"))
    sshconfig.remove_host(config.name)

    leftovers = _wait_for_nothing_billable(deployment, asg_name, leftover_timeout_s, poll_s)
    result["leftovers"] = leftovers
    if bucket:
        result["bucket_kept"] = _bucket_exists(deployment.s3, bucket)
    return result


def _outputs_file(config: RunConfig):
    from launcher.deployment import scratch_dir

    return scratch_dir(config.name) / "cdk-outputs.json"


def _bucket_exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except s3.exceptions.ClientError:
        return False


def _wait_for_nothing_billable(deployment: Deployment, asg_name: str | None, timeout_s: float, poll_s: float) -> dict:
    """Leftovers after up to `timeout_s` (instances take a minute or two to finish shutting down)."""
    deadline = time.monotonic() + timeout_s
    with progress.spinner("checking that nothing billable is left") as update:
        while True:
            found = deployment.aws.billable_leftovers(deployment.config.stack_name, asg_name)
            if not any(found.values()) or time.monotonic() >= deadline:
                return found
            update(", ".join(f"{len(v)} {k}" for k, v in found.items() if v))
            time.sleep(poll_s)
