"""Names the node agent accepts for weights: Hub repo ids, revisions and local weight paths.

Pure checks, called by `nodeagent.weights` (and later by the agent's HTTP layer, to answer 400
early) before any name becomes a path. A name that passes can never point outside the cache
directory: repo ids follow the Hub's own rules (`org/name` or `name`, parts of letters, digits,
`-`, `_`, `.`, no `--` or `..`, at most 96 characters each), so `models--{org}--{name}` is one
plain folder name; revisions are written by huggingface_hub as `refs/{revision}` files, so they
get the same treatment. A local weights path must be absolute and already normal (no `..`,
`.`, `~`, empty parts). Every refusal is an `InvalidName` whose message names the problem and
the fix. No I/O here: whether a path exists is the caller's business.
"""

from __future__ import annotations

import pathlib
import re

REPO_FOLDER_PREFIX = "models--"
_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?$")
_REVISION_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO_HINT = "use a Hugging Face repo id like 'Qwen/Qwen2.5-0.5B-Instruct'"


class InvalidName(ValueError):
    """A repo id, revision or path that the agent refuses; the message says why and what to do."""


def repo_id(text: str) -> str:
    """`text` if it is a valid Hub model id (`org/name` or `name`); raises InvalidName."""
    if not text:
        raise InvalidName(f"the repo id is empty: {_REPO_HINT}")
    if "\\" in text:
        raise InvalidName(f"repo id {text!r} contains a backslash: {_REPO_HINT}")
    if text.startswith("/") or text.startswith("~"):
        raise InvalidName(
            f"{text!r} is a path where a repo id is expected: {_REPO_HINT}, "
            "or give an absolute path to a weights directory as the source"
        )
    parts = text.split("/")
    if "" in parts:
        raise InvalidName(f"repo id {text!r} has an empty part: {_REPO_HINT}")
    if len(parts) > 2:
        raise InvalidName(f"repo id {text!r} has {len(parts)} parts: {_REPO_HINT}")
    for part in parts:
        if ".." in part or "--" in part or not _PART.match(part) or part.endswith(".git"):
            raise InvalidName(
                f"repo id {text!r}: {part!r} is not a valid name (letters, digits, '-', '_' "
                f"and '.', no '..' or '--', at most 96 characters): {_REPO_HINT}"
            )
    return text


def revision(text: str) -> str:
    """`text` if it is a usable branch, tag or commit sha; raises InvalidName."""
    hint = "use a branch name like 'main' or a 40-hex commit sha"
    if not text or len(text) > 255:
        raise InvalidName(f"revision {text!r} is empty or too long: {hint}")
    for part in text.split("/"):
        if not _REVISION_PART.match(part) or ".." in part:
            raise InvalidName(f"revision {text!r} is not a valid git ref: {hint}")
    return text


def is_commit(text: str) -> bool:
    """Is `text` a full 40-hex commit sha (what the cache names snapshots after)?"""
    return bool(_SHA.match(text))


def is_local(source: str) -> bool:
    """Does `source` name a local weights directory (an absolute path) rather than a repo id?"""
    return source.startswith("/")


def local_path(text: str) -> pathlib.Path:
    """`text` as an absolute, already normal directory path; raises InvalidName."""
    hint = "give the absolute path of the weights directory, e.g. '/srv/models/qwen'"
    if not text.startswith("/"):
        raise InvalidName(f"local weights path {text!r} is not absolute: {hint}")
    if "\\" in text or "\0" in text:
        raise InvalidName(f"local weights path {text!r} contains a backslash or NUL: {hint}")
    parts = text.rstrip("/").split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidName(f"local weights path {text!r} has '..', '.' or empty parts: {hint}")
    return pathlib.Path(text)


def repo_folder(repo: str) -> str:
    """The cache folder name of a valid repo id (`org/name` -> `models--org--name`)."""
    return REPO_FOLDER_PREFIX + repo_id(repo).replace("/", "--")


def repo_of_folder(folder: str) -> str | None:
    """The repo id a cache folder holds, or None when the folder is not one of ours."""
    if not folder.startswith(REPO_FOLDER_PREFIX):
        return None
    candidate = folder.removeprefix(REPO_FOLDER_PREFIX).replace("--", "/")
    try:
        return repo_id(candidate)
    except InvalidName:
        return None
