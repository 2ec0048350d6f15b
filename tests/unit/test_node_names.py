"""The node agent's name rules: what may become a path under the weights cache."""

from __future__ import annotations

import pathlib

import pytest

from nodeagent import names


@pytest.mark.parametrize(
    "text",
    ["Qwen/Qwen2.5-0.5B-Instruct", "gpt2", "org_1/model.v2", "a/b", "Org-Name/x_y-z.1"],
)
def test_hub_style_repo_ids_are_accepted_unchanged(text: str) -> None:
    assert names.repo_id(text) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("..", "not a valid name"),
        ("org/..", "not a valid name"),
        ("../etc", "not a valid name"),
        ("org/a..b", "not a valid name"),
        ("org--x/name", "not a valid name"),
        ("org/name--x", "not a valid name"),
        ("/etc/passwd", "is a path where a repo id is expected"),
        ("~/models", "is a path where a repo id is expected"),
        ("org\\name", "backslash"),
        ("org//name", "empty part"),
        ("org/", "empty part"),
        ("a/b/c", "has 3 parts"),
        ("org/name.git", "not a valid name"),
        ("org/na me", "not a valid name"),
        ("org/.hidden", "not a valid name"),
        ("org/" + "x" * 97, "not a valid name"),
    ],
)
def test_repo_ids_that_could_escape_or_are_not_hub_names_are_refused_with_the_fix(
    text: str, problem: str
) -> None:
    with pytest.raises(names.InvalidName, match=problem) as refused:
        names.repo_id(text)

    assert "use a Hugging Face repo id like" in str(refused.value)


@pytest.mark.parametrize("text", ["main", "v1.0", "refs/pr/1", "a" * 40, "feature_x-2"])
def test_branches_tags_and_shas_are_valid_revisions(text: str) -> None:
    assert names.revision(text) == text


@pytest.mark.parametrize(
    "text", ["", "..", "../main", "a/../b", "/main", "main/", "a\\b", "x" * 256]
)
def test_revisions_that_could_escape_refs_are_refused(text: str) -> None:
    with pytest.raises(names.InvalidName, match="revision"):
        names.revision(text)


@pytest.mark.parametrize("text", ["/srv/models/qwen", "/srv/models/qwen/", "/w"])
def test_absolute_normal_paths_are_local_weight_paths(text: str) -> None:
    assert names.local_path(text) == pathlib.Path(text)


@pytest.mark.parametrize(
    "text", ["srv/models", "./models", "/srv/../etc", "/srv/./x", "/srv//x", "/srv\\x", "~/x"]
)
def test_relative_or_unnormalised_local_paths_are_refused(text: str) -> None:
    with pytest.raises(names.InvalidName, match="local weights path"):
        names.local_path(text)


@pytest.mark.parametrize(
    ("repo", "folder"), [("org/name", "models--org--name"), ("gpt2", "models--gpt2")]
)
def test_a_repo_maps_to_one_cache_folder_and_back(repo: str, folder: str) -> None:
    assert names.repo_folder(repo) == folder
    assert names.repo_of_folder(folder) == repo


@pytest.mark.parametrize("folder", [".locks", "models--", "models--a--b--c", "datasets--a--b"])
def test_folders_that_are_not_model_repos_are_not_ours(folder: str) -> None:
    assert names.repo_of_folder(folder) is None
