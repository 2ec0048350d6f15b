"""The real huggingface_hub client downloads snapshots from the hub emulator (PROTOCOLS §A)."""

from __future__ import annotations

import hashlib
import pathlib

import httpx
import pytest
from huggingface_hub import errors, snapshot_download

from emulators import hfhub
from tests.contract.conftest import MIB


def _download(emu: hfhub.Emulator, cache: pathlib.Path, **kwargs: object) -> pathlib.Path:
    path = snapshot_download("org/tiny", cache_dir=cache, endpoint=emu.url, token=False, **kwargs)  # type: ignore[call-overload]
    return pathlib.Path(path)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def test_snapshot_download_gets_every_file_of_main_with_the_declared_bytes(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    repo = hub_thread.nodes[0].repos["org/tiny"]
    head = repo.commits[repo.branches["main"]]

    snapshot = _download(hub_thread, tmp_path)

    assert snapshot.name == head.sha
    assert (snapshot / "config.json").read_bytes() == head.files["config.json"].content()
    weights = snapshot / "model.safetensors"
    assert weights.stat().st_size == 24 * MIB
    assert _sha256(weights) == head.files["model.safetensors"].sha256
    assert (tmp_path / "models--org--tiny" / "refs" / "main").read_text() == head.sha


def test_a_blob_is_named_after_the_etag_git_sha1_or_lfs_sha256(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    head = hub_thread.nodes[0].repos["org/tiny"].resolve("main")
    assert head is not None

    _download(hub_thread, tmp_path)

    blobs = {p.name for p in (tmp_path / "models--org--tiny" / "blobs").iterdir()}
    config = head.files["config.json"].content()
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config, usedforsecurity=False).hexdigest()
    assert blobs == {git_sha1, head.files["model.safetensors"].sha256}


def test_a_new_commit_on_main_is_what_main_downloads_and_the_old_sha_still_resolves(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    repo = hub_thread.nodes[0].repos["org/tiny"]
    first = repo.branches["main"]
    second = repo.publish({"config.json": b'{"v": 2}'})

    latest = _download(hub_thread, tmp_path)
    pinned = _download(hub_thread, tmp_path, revision=first)

    assert (latest.name, pinned.name) == (second, first)
    assert (latest / "config.json").read_bytes() == b'{"v": 2}'
    assert (pinned / "config.json").read_bytes() != b'{"v": 2}'
    # the unchanged weights are one blob shared by both snapshots: downloaded once
    assert hub_thread.nodes[0].bytes_sent("model.safetensors") == 24 * MIB


def test_a_branch_other_than_main_is_downloadable_by_name(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    repo = hub_thread.nodes[0].repos["org/tiny"]
    sha = repo.publish({"extra.txt": b"dev"}, branch="dev")

    snapshot = _download(hub_thread, tmp_path, revision="dev")

    assert snapshot.name == sha
    assert (snapshot / "extra.txt").read_bytes() == b"dev"
    assert (tmp_path / "models--org--tiny" / "refs" / "dev").read_text() == sha


def test_a_cut_after_a_whole_10_mib_chunk_is_resumed_with_a_range_for_the_rest(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    node = hub_thread.nodes[0]
    node.download_faults.append(hfhub.DownloadFault("model.safetensors", after_bytes=12 * MIB))

    snapshot = _download(hub_thread, tmp_path)

    gets = [(d.start, d.sent, d.outcome) for d in node.downloads if d.path == "model.safetensors"]
    assert gets == [(0, 12 * MIB, "reset"), (10 * MIB, 14 * MIB, "complete")]
    head = node.repos["org/tiny"].resolve("main")
    assert head is not None
    assert _sha256(snapshot / "model.safetensors") == head.files["model.safetensors"].sha256


def test_a_5xx_on_a_file_fails_the_call_and_a_retry_fetches_only_that_file(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    node = hub_thread.nodes[0]
    node.download_faults.append(hfhub.DownloadFault("model.safetensors", status=503))

    with pytest.raises(errors.HfHubHTTPError, match="503"):
        _download(hub_thread, tmp_path, max_workers=1)
    node.downloads.clear()
    _download(hub_thread, tmp_path)

    assert [(d.path, d.sent) for d in node.downloads] == [("model.safetensors", 24 * MIB)]


def test_ranges_answer_206_with_content_range_and_past_the_end_416(
    hub_thread: hfhub.Emulator,
) -> None:
    head = hub_thread.nodes[0].repos["org/tiny"].resolve("main")
    assert head is not None
    url = f"{hub_thread.url}/org/tiny/resolve/main/model.safetensors"
    expected = head.files["model.safetensors"].content()[5 * MIB : 5 * MIB + 100]

    part = httpx.get(url, headers={"Range": f"bytes={5 * MIB}-{5 * MIB + 99}"})
    beyond = httpx.get(url, headers={"Range": f"bytes={24 * MIB}-"})

    assert (part.status_code, part.content) == (206, expected)
    assert part.headers["Content-Range"] == f"bytes {5 * MIB}-{5 * MIB + 99}/{24 * MIB}"
    assert (beyond.status_code, beyond.headers["Content-Range"]) == (416, f"bytes */{24 * MIB}")


def test_the_pull_rate_paces_a_download(hub_thread: hfhub.Emulator) -> None:
    hub_thread.nodes[0].pull_rate = 2 * MIB  # bytes/s: 1 MiB takes about half a second
    url = f"{hub_thread.url}/org/tiny/resolve/main/model.safetensors"

    response = httpx.get(url, headers={"Range": f"bytes=0-{MIB - 1}"})

    assert response.status_code == 206
    assert response.elapsed.total_seconds() >= 0.4
