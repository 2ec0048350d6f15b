"""The hub emulator's refusals, as the real huggingface_hub client raises them (PROTOCOLS §A.6)."""

from __future__ import annotations

import pathlib

import pytest
from huggingface_hub import errors, snapshot_download

from emulators import hfhub


def _download(
    emu: hfhub.Emulator, cache: pathlib.Path, repo: str, token: str | bool, revision: str = "main"
) -> pathlib.Path:
    path = snapshot_download(
        repo, cache_dir=cache, endpoint=emu.url, token=token, revision=revision
    )
    return pathlib.Path(path)


def test_a_missing_repo_raises_repository_not_found_anonymous_401_and_with_a_token_404(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(
        errors.RepositoryNotFoundError, match="Repository Not Found for url"
    ) as anon:
        _download(hub_thread, tmp_path, "org/absent", token=False)
    with pytest.raises(errors.RepositoryNotFoundError) as tokened:
        _download(hub_thread, tmp_path, "org/absent", token="hf_ok")

    assert not isinstance(anon.value, errors.GatedRepoError)
    assert (anon.value.response.status_code, tokened.value.response.status_code) == (401, 404)
    assert anon.value.response.headers["X-Error-Code"] == "RepoNotFound"


def test_a_gated_repo_raises_gated_repo_error_with_the_hubs_message_and_writes_no_blob(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(errors.GatedRepoError, match="Please log in") as anon:
        _download(hub_thread, tmp_path, "org/gated", token=False)
    with pytest.raises(errors.GatedRepoError, match="not in the authorized list") as other:
        _download(hub_thread, tmp_path, "org/gated", token="hf_someone_else")

    assert (anon.value.response.status_code, other.value.response.status_code) == (401, 403)
    assert not list((tmp_path / "models--org--gated").glob("blobs/*"))


def test_a_granted_token_downloads_gated_and_private_repos(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    gated = _download(hub_thread, tmp_path, "org/gated", token="hf_ok")
    private = _download(hub_thread, tmp_path, "org/private", token="hf_ok")

    assert (gated / "model.safetensors").stat().st_size == 1000
    assert (private / "model.bin").stat().st_size == 10


def test_a_private_repo_does_not_exist_without_its_token(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(errors.RepositoryNotFoundError) as raised:
        _download(hub_thread, tmp_path, "org/private", token=False)

    assert raised.value.response.status_code == 401
    requests = hub_thread.nodes[0].requests
    assert not any(key.startswith("HEAD /org/private/resolve") for key in requests)


def test_hf_token_in_the_environment_is_honoured_when_no_token_is_passed(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_ok")

    private = snapshot_download(
        "org/private", cache_dir=tmp_path, endpoint=hub_thread.url, token=None
    )

    assert (pathlib.Path(private) / "model.bin").stat().st_size == 10


def test_an_unknown_revision_raises_revision_not_found(
    hub_thread: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(errors.RevisionNotFoundError, match="Invalid rev id: nope"):
        _download(hub_thread, tmp_path, "org/tiny", token=False, revision="nope")
