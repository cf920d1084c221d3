"""The run config: one TOML file per run (see examples/run.toml), validated before anything is touched.

Every problem is a `ConfigError` whose message names the key and the fix. Checks that need AWS (is the
dataset already mirrored in the bucket?) live in `require_dataset_access`, called by `launcher train`.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from launcher import catalog
from launcher.errors import ConfigError

ALLOCATION_STRATEGIES = ("price-capacity-optimized", "capacity-optimized")
DEFAULT_SSH_USER = "ubuntu"   # the Deep Learning Base AMI is Ubuntu


@dataclass(frozen=True)
class DatasetConfig:
    repo_id: str = "ILSVRC/imagenet-1k"
    revision: str = "main"
    name: str = "imagenet-1k"
    hf_token_env: str = "HF_TOKEN"

    def token(self) -> str | None:
        return os.environ.get(self.hf_token_env) or None


@dataclass(frozen=True)
class SshConfig:
    """Where to reach the instance. `host` set = skip instance discovery (tests, the local drill)."""

    host: str | None = None
    port: int = 22
    user: str = DEFAULT_SSH_USER
    key: str | None = None
    key_pair: str | None = None           # EC2 key pair the stack puts on instances (context key_pair)

    @property
    def key_path(self) -> Path | None:
        return Path(self.key).expanduser() if self.key else None


@dataclass(frozen=True)
class RunConfig:
    name: str
    region: str = "us-east-1"
    instance_types: tuple[str, ...] = catalog.DEFAULT_INSTANCE_TYPES
    nodes: int = 1
    allocation_strategy: str = ALLOCATION_STRATEGIES[0]
    operator_cidr: str | None = None
    stack: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: dict = field(default_factory=dict)
    bucket_name: str | None = None        # set = use this bucket instead of the stack output (drill, tests)
    retain_bucket: bool = True
    budget_usd: float | None = None
    budget_email: str | None = None
    ssh: SshConfig = field(default_factory=SshConfig)
    context: dict = field(default_factory=dict)   # extra CDK context passed through verbatim
    path: Path | None = None

    @property
    def stack_name(self) -> str:
        return self.stack or f"SpotResnet-{self.name}"

    @property
    def hf_token_parameter(self) -> str:
        return f"/spot-resnet/{self.name}/hf-token"

    def cdk_context(self, operator_cidr: str | None = None,
                    availability_zones: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
        """The `-c key=value` pairs `cdk deploy`/`destroy` get (keys as infra/config.py reads them).

        `availability_zones` (looked up by `launcher up`) gives the stack a subnet in each; `[context]` in
        the config overrides it like any other key."""
        ctx = {
            "stack_name": self.stack_name,
            "nodes": str(self.nodes),
            "instance_types": ",".join(self.instance_types),
            "allocation_strategy": self.allocation_strategy,
            "destroy_bucket": "false" if self.retain_bucket else "true",
        }
        cidr = operator_cidr or self.operator_cidr
        if cidr:
            ctx["operator_cidr"] = cidr
        if self.budget_usd is not None:
            ctx["budget_usd"] = f"{self.budget_usd:g}"
        if self.budget_email:
            ctx["budget_email"] = self.budget_email
        if self.ssh.key_pair:
            ctx["key_pair"] = self.ssh.key_pair
        if availability_zones:
            ctx["availability_zones"] = ",".join(availability_zones)
        ctx.update({str(k): _context_value(v) for k, v in self.context.items()})
        return ctx


def _context_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------- loading
def load(path: str | os.PathLike) -> RunConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found: copy examples/run.toml there and edit it, "
                          "or pass --config PATH")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse(data, path=path)


def parse(data: dict, *, path: Path | None = None) -> RunConfig:
    where = f"{path}: " if path else ""

    def fail(message: str):
        raise ConfigError(where + message)

    known = {"name", "region", "instance_types", "nodes", "allocation_strategy", "operator_cidr", "stack",
             "dataset", "train", "bucket", "budget", "ssh", "context"}
    unknown = sorted(set(data) - known)
    if unknown:
        hints = [f"{k!r} (did you mean {difflib.get_close_matches(k, known, n=1)[0]!r}?)"
                 if difflib.get_close_matches(k, known, n=1) else repr(k) for k in unknown]
        fail(f"unknown key {', '.join(hints)}: the keys are {', '.join(sorted(known))}")

    name = data.get("name")
    if not name:
        fail("name is missing: add name = \"resnet50-a\" (lowercase letters, digits, '-')")
    from job import layout

    try:
        layout.check_run_name(name)
    except ValueError as exc:
        fail(f"name: {exc}")

    region = _check_region(data.get("region", "us-east-1"), fail)

    types = data.get("instance_types", list(catalog.DEFAULT_INSTANCE_TYPES))
    if isinstance(types, str):
        types = [types]
    try:
        types = tuple(catalog.validate(types))
    except ValueError as exc:
        fail(f"instance_types: {exc}")

    nodes = data.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 0:
        fail(f"nodes = {nodes!r} must be a whole number ≥ 0: use nodes = 1 (0 parks the group, keeping the data)")
    if nodes > 64:
        fail(f"nodes = {nodes} is more than this tool supports: use 1..64")

    strategy = data.get("allocation_strategy", ALLOCATION_STRATEGIES[0])
    if strategy not in ALLOCATION_STRATEGIES:
        fail(f"allocation_strategy = {strategy!r} is not supported: use "
             + " or ".join(f'"{s}"' for s in ALLOCATION_STRATEGIES))

    cidr = data.get("operator_cidr")
    if cidr is not None:
        cidr = check_cidr(cidr, fail)

    stack = data.get("stack", "")
    if stack and not (stack[0].isalpha() and all(c.isalnum() or c == "-" for c in stack) and len(stack) <= 128):
        fail(f"stack = {stack!r} is not a CloudFormation stack name: use letters, digits and '-', starting "
             "with a letter (or leave it out for SpotResnet-<name>)")

    dataset = _dataset(data.get("dataset", {}), fail)
    train = _train(data.get("train", {}), fail)

    bucket = _table(data, "bucket", fail)
    retain = bucket.get("retain", True)
    if not isinstance(retain, bool):
        fail(f"bucket.retain = {retain!r} must be true or false")
    bucket_name = bucket.get("name")

    budget = _table(data, "budget", fail)
    usd = budget.get("usd")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or usd <= 0):
        fail(f"budget.usd = {usd!r} must be a positive amount in USD, e.g. budget.usd = 100")
    email = budget.get("email")
    if email is not None and ("@" not in str(email) or " " in str(email)):
        fail(f"budget.email = {email!r} is not an email address: use budget.email = \"you@example.com\"")

    ssh = _ssh(_table(data, "ssh", fail), fail)
    context = _table(data, "context", fail)

    return RunConfig(name=name, region=region, instance_types=types, nodes=nodes, allocation_strategy=strategy,
                     operator_cidr=cidr, stack=stack, dataset=dataset, train=train, bucket_name=bucket_name,
                     retain_bucket=retain, budget_usd=float(usd) if usd is not None else None,
                     budget_email=email, ssh=ssh, context=dict(context), path=path)


def _table(data: dict, key: str, fail) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        fail(f"{key} must be a table: write [{key}] on its own line followed by its keys")
    return value


def aws_regions() -> tuple[list[str], list[str]]:
    """(commercial regions, every region botocore knows across partitions): kept current by botocore."""
    import botocore.session

    session = botocore.session.get_session()
    everywhere: set[str] = set()
    for partition in session.get_available_partitions():
        everywhere.update(session.get_available_regions("ec2", partition_name=partition))
    return sorted(session.get_available_regions("ec2")), sorted(everywhere)


def _check_region(region, fail) -> str:
    commercial, everywhere = aws_regions()
    if region not in everywhere:
        close = difflib.get_close_matches(str(region), commercial, n=3, cutoff=0.6)
        hint = ("did you mean " + " or ".join(f'region = "{c}"' for c in close) + "? ") if close else ""
        fail(f"region = {region!r} is not an AWS region: {hint}Regions: {', '.join(commercial)}")
    return region


def check_cidr(cidr, fail=None) -> str:
    def _fail(message):
        if fail:
            fail(message)
        raise ConfigError(message)

    fix = 'use your address, e.g. operator_cidr = "203.0.113.7/32", or leave it out to use your public IP'
    try:
        network = ipaddress.ip_network(str(cidr), strict=True)
    except ValueError:
        _fail(f"operator_cidr = {cidr!r} is not a CIDR block with no host bits set: {fix}")
    if "/" not in str(cidr):
        _fail(f"operator_cidr = {cidr!r} has no prefix length: {fix}")
    if network.prefixlen == 0:
        _fail(f"operator_cidr = {cidr!r} would open SSH to the whole internet: {fix}")
    return str(network)


def _dataset(table, fail) -> DatasetConfig:
    if not isinstance(table, dict):
        fail("dataset must be a table: [dataset] with repo_id, revision, name, hf_token_env")
    known = {"repo_id", "revision", "name", "hf_token_env"}
    unknown = sorted(set(table) - known)
    if unknown:
        fail(f"dataset: unknown key(s) {unknown}: the keys are {sorted(known)}")
    ds = DatasetConfig(**table)
    if "/" not in ds.repo_id:
        fail(f"dataset.repo_id = {ds.repo_id!r} is not a Hub repo id: use \"ILSVRC/imagenet-1k\"")
    from job import layout

    try:
        layout.check_run_name(ds.name)
    except ValueError:
        fail(f"dataset.name = {ds.name!r} must be lowercase letters, digits and '-' (it becomes an S3 prefix), "
             "e.g. \"imagenet-1k\"")
    if not ds.hf_token_env.replace("_", "").isalnum():
        fail(f"dataset.hf_token_env = {ds.hf_token_env!r} must name an environment variable, e.g. \"HF_TOKEN\"")
    return ds


def _train(table, fail) -> dict:
    """Checked by the trainer's own recipe builder (job/recipes.py, stdlib only), so both agree on the keys."""
    from job import recipes

    if not isinstance(table, dict):
        fail("train must be a table: [train] with preset, model, epochs, global_batch, ...")
    train = dict(table)
    preset = train.setdefault("preset", "fast")
    if preset not in recipes.PRESETS:
        close = difflib.get_close_matches(str(preset), list(recipes.PRESETS), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        fail(f"train.preset = {preset!r} is unknown{hint}: use one of {', '.join(sorted(recipes.PRESETS))}")
    for key in ("epochs", "global_batch"):
        if key in train:
            value = train[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                fail(f"train.{key} = {value!r} must be a positive whole number")
    nproc = train.get("nproc_per_node", "auto")
    if nproc != "auto" and (isinstance(nproc, bool) or not isinstance(nproc, int) or nproc <= 0):
        fail(f'train.nproc_per_node = {nproc!r} must be "auto" (one process per GPU) or a positive whole number')
    try:
        recipes.build_config({k: v for k, v in train.items() if k != "nproc_per_node"})
    except (ValueError, TypeError) as exc:
        fail(f"train: {exc}")
    return train


def _ssh(table: dict, fail) -> SshConfig:
    known = {"host", "port", "user", "key", "key_pair"}
    unknown = sorted(set(table) - known)
    if unknown:
        fail(f"ssh: unknown key(s) {unknown}: the keys are {sorted(known)}")
    port = table.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        fail(f"ssh.port = {port!r} must be a TCP port number 1..65535")
    ssh = SshConfig(host=table.get("host"), port=port, user=table.get("user", DEFAULT_SSH_USER),
                    key=table.get("key"), key_pair=table.get("key_pair"))
    if ssh.key_path is not None and not ssh.key_path.exists():
        fail(f"ssh.key = {ssh.key!r}: no such file; point it at the private key that opens the instance")
    return ssh


# ------------------------------------------------------------------------------------ checks that need AWS
def require_dataset_access(config: RunConfig, s3, bucket: str) -> bool:
    """True when the bucket already mirrors the prepared dataset; else the Hub token must be set.

    Raises ConfigError naming the variable when the instance would have to download from the Hub
    without a token.
    """
    from job import layout

    key = layout.dataset_manifest_key(config.dataset.name)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    if config.dataset.token() is None:
        raise ConfigError(
            f"dataset.hf_token_env: ${config.dataset.hf_token_env} is not set and s3://{bucket}/{key} does not "
            f"exist, so the instance must download {config.dataset.repo_id} from the Hugging Face Hub. Fix: "
            f"export {config.dataset.hf_token_env}=hf_... with a token of an account that accepted the dataset's "
            f"terms at https://huggingface.co/datasets/{config.dataset.repo_id}")
    return False
