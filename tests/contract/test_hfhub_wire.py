"""Raw HTTP details of the hub emulator: tree listing, HEAD headers, the admin API (PROTOCOLS §A)."""

from __future__ import annotations

import time

import httpx
from huggingface_hub import HfApi, hf_api

from emulators import hfhub
from tests.contract.conftest import MIB


def test_the_tree_lists_directories_and_lfs_files_as_the_client_parses_them(
    hub_thread: hfhub.Emulator,
) -> None:
    repo = hub_thread.nodes[0].repos["org/tiny"]
    repo.publish({"onnx/fp16/model.onnx": 2 * MIB})
    api = HfApi(endpoint=hub_thread.url, token=False)

    nested = {e.path: e for e in api.list_repo_tree("org/tiny", recursive=True)}
    top = {e.path for e in api.list_repo_tree("org/tiny")}

    assert top == {"config.json", "model.safetensors", "onnx"}
    assert isinstance(nested["onnx"], hf_api.RepoFolder)
    assert isinstance(nested["onnx/fp16"], hf_api.RepoFolder)
    weights = nested["onnx/fp16/model.onnx"]
    assert isinstance(weights, hf_api.RepoFile)
    assert weights.lfs is not None
    assert (weights.size, weights.lfs.size) == (2 * MIB, 2 * MIB)
    config = nested["config.json"]
    assert isinstance(config, hf_api.RepoFile)
    assert config.lfs is None


def test_head_of_an_lfs_file_carries_commit_linked_etag_and_size_and_no_xet(
    hub_thread: hfhub.Emulator,
) -> None:
    repo = hub_thread.nodes[0].repos["org/tiny"]
    head = repo.resolve("main")
    assert head is not None

    response = httpx.head(f"{hub_thread.url}/org/tiny/resolve/main/model.safetensors")

    assert response.status_code == 200
    assert response.headers["X-Repo-Commit"] == head.sha
    assert response.headers["X-Linked-Etag"] == f'"{head.files["model.safetensors"].sha256}"'
    assert response.headers["X-Linked-Size"] == str(24 * MIB)
    assert response.headers["Content-Length"] == str(24 * MIB)
    assert not any(key.lower().startswith("x-xet") for key in response.headers)


def test_an_unknown_file_is_entry_not_found_with_the_commit(hub_thread: hfhub.Emulator) -> None:
    response = httpx.get(f"{hub_thread.url}/org/tiny/resolve/main/absent.bin")

    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "EntryNotFound"
    assert (
        response.headers["X-Repo-Commit"] == hub_thread.nodes[0].repos["org/tiny"].branches["main"]
    )


def test_the_admin_api_publishes_a_commit_and_arms_download_faults(
    hub_thread: hfhub.Emulator,
) -> None:
    admin = f"{hub_thread.url}/_emulator/state"
    before = hub_thread.nodes[0].repos["org/tiny"].branches["main"]

    published = httpx.post(
        admin, json={"publish": {"repo": "org/tiny", "files": {"extra.bin": 10}}}
    )
    armed = httpx.post(
        admin, json={"download_faults": [{"path": "extra.bin", "status": 500, "times": 1}]}
    )
    broken = httpx.get(f"{hub_thread.url}/org/tiny/resolve/main/extra.bin")
    healed = httpx.get(f"{hub_thread.url}/org/tiny/resolve/main/extra.bin")

    node = published.json()["nodes"][0]
    assert node["repos"]["org/tiny"]["branches"]["main"] != before
    assert armed.json()["nodes"][0]["download_faults"][0]["path"] == "extra.bin"
    assert (broken.status_code, healed.status_code, len(healed.content)) == (500, 200, 10)


def test_a_client_leaving_mid_body_is_logged_with_the_bytes_sent(
    hub_thread: hfhub.Emulator,
) -> None:
    node = hub_thread.nodes[0]
    node.pull_rate = 4 * MIB  # slow enough that the client leaves long before the end
    url = f"{hub_thread.url}/org/tiny/resolve/main/model.safetensors"

    with httpx.stream("GET", url) as response:
        next(response.iter_bytes())

    deadline = time.monotonic() + 10
    while not node.downloads and time.monotonic() < deadline:
        time.sleep(0.01)  # the server notices the closed connection on its next write
    [download] = node.downloads
    assert download.outcome == "client gone"
    assert 0 < download.sent < 24 * MIB
