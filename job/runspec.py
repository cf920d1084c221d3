"""The run spec: everything a fresh instance needs to start or resume a run without the laptop.

Stored at runs/<run>/spec.json. Never holds secrets: the Hub token lives in SSM Parameter Store and the
spec only names the parameter.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

from job import layout

SPEC_VERSION = 1


@dataclass
class DatasetSpec:
    name: str = "imagenet-1k"                 # prefix under datasets/ and prepared/
    repo_id: str = "ILSVRC/imagenet-1k"
    revision: str = "main"
    splits: list[str] = field(default_factory=lambda: ["train", "validation"])
    short_side: int = 0                       # 0 = job.prepare's measured default
    hf_token_parameter: str | None = None     # SSM SecureString name holding the Hub token


@dataclass
class RunSpec:
    run: str
    bucket: str
    region: str = "us-east-1"
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    train: dict = field(default_factory=dict)      # preset + overrides, expanded by job.recipes
    nproc_per_node: int | str = "auto"             # "auto" = one process per GPU (2 on CPU)
    price_per_hour: dict[str, float] = field(default_factory=dict)  # instance type -> USD/h (spot, at train time)
    created: float = field(default_factory=time.time)
    version: int = SPEC_VERSION

    def __post_init__(self):
        layout.check_run_name(self.run)
        if isinstance(self.dataset, dict):
            self.dataset = DatasetSpec(**self.dataset)
        if not self.bucket:
            raise ValueError("run spec needs a bucket (the stack output 'Bucket')")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunSpec":
        data = json.loads(text)
        version = data.get("version", SPEC_VERSION)
        if version > SPEC_VERSION:
            raise ValueError(f"run spec version {version} is newer than this job package understands ({SPEC_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path) -> "RunSpec":
        with open(path, "rb") as fh:
            return cls.from_json(fh.read())

    def save(self, path) -> None:
        from pathlib import Path

        Path(path).write_text(self.to_json())

    # S3
    def upload(self, s3) -> None:
        s3.put_object(Bucket=self.bucket, Key=layout.spec_key(self.run), Body=self.to_json().encode(),
                      ContentType="application/json")

    @classmethod
    def fetch(cls, s3, bucket: str, run: str) -> "RunSpec":
        body = s3.get_object(Bucket=bucket, Key=layout.spec_key(run))["Body"].read()
        return cls.from_json(body)
