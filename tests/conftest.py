"""Shared fixtures: the real local stand-ins (moto server, real-photo dataset)."""
from __future__ import annotations

import uuid

import pytest

from job.testing.moto_server import MotoServer


@pytest.fixture(scope="session")
def moto_server():
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto_server, monkeypatch):
    """boto3 in this process talks to the moto server; returns it."""
    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    from job import s3

    s3._session.cache_clear()
    yield moto_server
    s3._session.cache_clear()


@pytest.fixture
def bucket(aws):
    """A fresh bucket on the moto server."""
    from job import s3

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def hub_dataset(tmp_path_factory):
    """The real-photo dataset in the Hub's layout (10 classes, 400 train / 100 validation)."""
    from job.testing.photos import make_hub_dataset

    root = tmp_path_factory.mktemp("hub-dataset")
    summary = make_hub_dataset(root)
    return root, summary
