"""What a hub pull would take: a repo revision's file sizes, and the bytes already cached.

`measure` asks the hub (through `huggingface_hub.HfApi`) for the revision's commit and file
tree and counts which files' blobs are already complete in the cache's `blobs/` folder. The
weights cache uses it for its disk check before a pull (`nodeagent.weights`), and the agent's
``GET /v1/weights/size`` answers with it so the controller admits a pull only where it fits
(issue 16). Blocking (run it in a thread); raises what `HfApi` raises. Imports nothing of ours
but `nodeagent`.
"""

from __future__ import annotations

import dataclasses
import pathlib

from huggingface_hub import HfApi, hf_api

from nodeagent import names


@dataclasses.dataclass(frozen=True)
class Measured:
    """`total` bytes of the revision's files; `cached` of them already in the cache."""

    repo: str
    commit: str
    total: int
    cached: int


def measure(
    hub: pathlib.Path, repo: str, rev: str, endpoint: str | None, token: str | None
) -> Measured:
    """The sizes of ``repo`` at ``rev`` against the cache under ``hub``."""
    api = HfApi(endpoint=endpoint, token=token)
    commit = api.model_info(repo, revision=rev).sha
    assert commit is not None  # ModelInfo asserts it for a revision request
    files = [
        entry
        for entry in api.list_repo_tree(repo, revision=commit, recursive=True)
        if isinstance(entry, hf_api.RepoFile)
    ]
    blobs = hub / names.repo_folder(repo) / "blobs"
    total = sum(entry.size for entry in files)
    cached = sum(entry.size for entry in files if _has_blob(blobs, entry))
    return Measured(repo, commit, total, cached)


def _has_blob(blobs: pathlib.Path, entry: hf_api.RepoFile) -> bool:
    etag = entry.lfs.sha256 if entry.lfs is not None else entry.blob_id
    blob = blobs / etag
    return blob.is_file() and not blob.is_symlink() and blob.stat().st_size == entry.size
