"""Listing, deleting and recording local weights in the node agent's cache; names never escape."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from emulators import hfhub
from nodeagent import progress, weights

REPOS = [
    hfhub.RepoSpec("org/one", {"config.json": b"{}", "model.safetensors": 3000}),
    hfhub.RepoSpec("solo", {"model.bin": 500}),
]


@pytest.fixture
async def hub() -> AsyncIterator[hfhub.Emulator]:
    async with hfhub.running(repos=REPOS) as emu:
        yield emu


@pytest.fixture
def local_weights(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "operator" / "qwen"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 700)
    (folder / "config.json").write_bytes(b"{}")
    return folder


def _exists(path: pathlib.Path) -> bool:
    return path.exists() or path.is_symlink()


async def test_list_shows_each_pulled_repo_and_local_record_with_commit_and_size(
    hub: hfhub.Emulator, tmp_path: pathlib.Path, local_weights: pathlib.Path
) -> None:
    cache = weights.Cache(tmp_path / "cache", endpoint=hub.url)
    await cache.pull("org/one")
    await cache.pull("solo")
    seen: list[progress.Progress] = []
    await cache.pull(str(local_weights), on_progress=seen.append)

    listed = {w.name: (w.source, w.commit, w.size) for w in await cache.list()}

    one = hub.nodes[0].repos["org/one"].branches["main"]
    solo = hub.nodes[0].repos["solo"].branches["main"]
    assert listed == {
        "org/one": ("hub", one, 3002),
        "solo": ("hub", solo, 500),
        str(local_weights): ("local", None, 702),
    }
    assert seen == [progress.Progress(702, 702)]


async def test_a_local_directory_is_recorded_not_copied_and_delete_keeps_it(
    tmp_path: pathlib.Path, local_weights: pathlib.Path
) -> None:
    cache = weights.Cache(tmp_path / "cache")

    pulled = await cache.pull(str(local_weights))
    deleted = await cache.delete(str(local_weights))

    assert pulled.path == local_weights
    assert _exists(local_weights / "model.safetensors")
    assert deleted is True
    assert await cache.list() == []
    assert await cache.delete(str(local_weights)) is False


async def test_delete_removes_the_repo_folder_and_is_false_the_second_time(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    cache = weights.Cache(tmp_path, endpoint=hub.url)
    pulled = await cache.pull("org/one")

    first = await cache.delete("org/one")
    second = await cache.delete("org/one")

    assert (first, second) == (True, False)
    assert not _exists(pulled.path.parent.parent)
    assert [w.name for w in await cache.list()] == []


async def test_delete_of_a_symlinked_repo_folder_removes_the_link_and_never_its_target(
    tmp_path: pathlib.Path,
) -> None:
    precious = tmp_path / "precious"
    (precious / "snapshots").mkdir(parents=True)
    (precious / "keep.txt").write_text("keep")
    cache = weights.Cache(tmp_path / "cache")
    (tmp_path / "cache" / "hub").mkdir(parents=True)
    (tmp_path / "cache" / "hub" / "models--org--trap").symlink_to(precious)

    listed = await cache.list()
    deleted = await cache.delete("org/trap")

    assert listed == []  # a symlinked folder is not listed as ours
    assert deleted is True
    assert (precious / "keep.txt").read_text() == "keep"
    assert not _exists(tmp_path / "cache" / "hub" / "models--org--trap")


@pytest.mark.parametrize(
    "source",
    ["../etc", "org/../../etc", "/srv/../etc", "org\\name", "", "a/b/c", "org//name", "~/w"],
)
async def test_a_name_that_could_escape_is_refused_before_any_request(
    hub: hfhub.Emulator, tmp_path: pathlib.Path, source: str
) -> None:
    cache = weights.Cache(tmp_path, endpoint=hub.url)

    with pytest.raises(weights.WeightsError) as pulled:
        await cache.pull(source)
    with pytest.raises(weights.WeightsError) as deleted:
        await cache.delete(source if not source.startswith("/") else "org/../x")

    assert pulled.value.kind is weights.ErrorKind.INVALID
    assert deleted.value.kind is weights.ErrorKind.INVALID
    assert dict(hub.nodes[0].requests) == {}


async def test_a_revision_that_could_escape_refs_is_refused(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    cache = weights.Cache(tmp_path, endpoint=hub.url)

    with pytest.raises(weights.WeightsError, match="not a valid git ref") as refused:
        await cache.pull("org/one", "../../../../escape")

    assert refused.value.kind is weights.ErrorKind.INVALID
    assert dict(hub.nodes[0].requests) == {}


async def test_a_local_source_must_be_an_existing_directory_without_a_revision(
    tmp_path: pathlib.Path, local_weights: pathlib.Path
) -> None:
    cache = weights.Cache(tmp_path / "cache")

    with pytest.raises(weights.WeightsError, match="not a directory") as missing:
        await cache.pull(str(tmp_path / "absent"))
    with pytest.raises(weights.WeightsError, match="takes no revision") as revised:
        await cache.pull(str(local_weights), "main")

    assert missing.value.kind is weights.ErrorKind.INVALID
    assert revised.value.kind is weights.ErrorKind.INVALID
    assert await cache.list() == []
