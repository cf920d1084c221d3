"""The local Hub answers the real huggingface_hub client the way the Hub does (plain HTTP, no Xet)."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from job.integrity import sha256_file
from job.testing.hub_server import HubServer

REPO = "ILSVRC/imagenet-1k"


def test_real_client_lists_and_snapshots_the_repo(hub_dataset, tmp_path):
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url, snapshot_download

    root, summary = hub_dataset
    with HubServer(root, REPO) as hub:
        api = HfApi(endpoint=hub.url, token=False)
        info = api.dataset_info(REPO, revision="main", files_metadata=True)
        assert info.sha == hub.commit
        siblings = {s.rfilename: s for s in info.siblings}
        assert sorted(siblings) == sorted(summary["files"])
        parquet = [f for f in summary["files"] if f.endswith(".parquet")]
        for name in parquet:
            assert siblings[name].lfs.sha256 == sha256_file(root / name)
            assert siblings[name].lfs.size == (root / name).stat().st_size
        assert siblings["README.md"].lfs is None and siblings["README.md"].size == (root / "README.md").stat().st_size

        tree = list(api.list_repo_tree(REPO, path_in_repo="data", repo_type="dataset", revision=hub.commit))
        assert sorted(f.path for f in tree) == sorted(parquet)

        meta = get_hf_file_metadata(hf_hub_url(REPO, parquet[0], repo_type="dataset", endpoint=hub.url),
                                    token=False, endpoint=hub.url)
        assert meta.etag == sha256_file(root / parquet[0]) and meta.commit_hash == hub.commit
        assert meta.size == (root / parquet[0]).stat().st_size
        assert meta.xet_file_data is None  # no Xet headers: clients stay on plain HTTP

        local = tmp_path / "snap"
        snapshot_download(REPO, repo_type="dataset", local_dir=local, endpoint=hub.url, token=False, max_workers=2)
    for name in summary["files"]:
        assert sha256_file(local / name) == sha256_file(root / name)


def test_range_requests_and_errors(hub_dataset):
    root, summary = hub_dataset
    name = next(f for f in summary["files"] if f.endswith(".parquet"))
    data = (root / name).read_bytes()
    with HubServer(root, REPO, token="hf_good") as hub:
        url = f"{hub.url}/datasets/{REPO}/resolve/main/{name}"
        request = urllib.request.Request(url, headers={"Range": "bytes=100-199", "Authorization": "Bearer hf_good"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            assert response.read() == data[100:200]
        for headers, status, code in (({}, 401, "GatedRepo"), ({"Authorization": "Bearer nope"}, 401, None)):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
            assert info.value.code == status and info.value.headers.get("X-Error-Code") == code
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{hub.url}/datasets/{REPO}/resolve/no-such-branch/{name}", timeout=10)
        assert info.value.code == 404 and info.value.headers["X-Error-Code"] == "RevisionNotFound"
        assert sorted(r.status for r in hub.requests(kind="resolve")) == [206, 401, 401, 404]
