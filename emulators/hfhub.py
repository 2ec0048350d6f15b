"""The Hugging Face Hub emulator: what `huggingface_hub.snapshot_download` needs, over HTTP.

Tests and the node agent point the real client at it (`endpoint=emu.url`, or `HF_ENDPOINT`).
Repos are declared as `hfhub_node.RepoSpec`s (files as literal bytes or generated sizes,
`private`, `gated`, granted `tokens`); `emu.nodes[0]` is the `HubNode` (repos, `pull_rate`,
`download_faults`, the `downloads` log). Wire facts, from PROTOCOLS.md part A (checked against
huggingface_hub 2.4.0 by the contract tests in tests/contract/test_hfhub_*.py):

- `GET /api/models/{repo}/revision/{rev}` (§A.2 step 1): JSON with `id` (required by
  `ModelInfo`), `sha` (required; becomes the snapshot's commit) and `siblings[].rfilename`.
  The client skips it when `rev` is a 40-hex sha.
- `GET /api/models/{repo}/tree/{sha}[/{dir}]?recursive=true&expand=false` (§A.2 step 2): an
  array of `{type: file|directory, path, oid, size}`; LFS files add `lfs: {oid (sha256), size,
  pointerSize}`. No `xetHash` anywhere, so the client downloads over plain HTTP (§A.5).
  No pagination (`Link: rel="next"`): repos here are small.
- `HEAD /{repo}/resolve/{rev}/{path}` (§A.3): 200 with `X-Repo-Commit` (must equal the info's
  `sha`), a quoted `ETag` (git sha1 for git files, sha256 for LFS files; the client names the
  blob after it), `X-Linked-Etag` and `X-Linked-Size` for LFS files, `Content-Length`. Never a
  redirect. Revisions are branch names or commit shas (the per-file calls pass the sha).
- `GET` of the same URL (§A.4): the bytes; `Range: bytes=N-` / `bytes=N-M` answers 206 with
  `Content-Range`; an unsatisfiable range 416. The client checks only the size and, in 2.4,
  writes per 10 MiB chunk: a cut within the first 10 MiB restarts the file, a later one resumes
  with `Range` (§A.x). `pull_rate` (bytes/s) paces every body.
- Errors (§A.6, §A.x): `X-Error-Code` and `X-Error-Message` headers (a HEAD has no body, so the
  client reads only these) and `{"error": message}`. Unknown or private-without-access repo:
  401 `RepoNotFound` anonymous, 404 with a token. Gated repo: info and tree public, file
  downloads 401 `GatedRepo` anonymous, 403 `GatedRepo` with a token lacking access. Unknown
  revision: 404 `RevisionNotFound`; unknown file: 404 `EntryNotFound` with `X-Repo-Commit`.
- Faults: the generic ones of `emulators.faults` per endpoint path, plus
  `hfhub_node.DownloadFault`: a file's next GET answers a status (5xx) before any byte, or its
  connection is closed after N body bytes (the client sees `RemoteProtocolError`).

Admin API as in `emulators.server`; `POST /_emulator/state` takes `pull_rate`,
`download_faults` and `publish` (`HubNode.patch`). Imports nothing of the controller.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TypedDict, Unpack

from aiohttp import web

from emulators import hfhub_node, hfhub_repos, runner, server

DEFAULT_PORT = 8090
Call = server.Call[hfhub_node.HubNode]
Emulator = runner.Emulator[hfhub_node.HubNode]
Routes = Mapping[str, server.Handler[hfhub_node.HubNode]]
RepoSpec = hfhub_node.RepoSpec
DownloadFault = hfhub_node.DownloadFault
_REPO = r"(?P<repo>[\w.\-]+(?:/[\w.\-]+)?)"
_INFO = re.compile(rf"^/api/models/{_REPO}/revision/(?P<rev>[^/]+)$")
_TREE = re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<dir>.+?))?/?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_PIECE = 256 * 1024


class Options(TypedDict, total=False):
    """Options of `build`, also accepted by `running`, `in_thread` and `serve`."""

    repos: Sequence[hfhub_node.RepoSpec]
    pull_rate: float | None


def build(**options: Unpack[Options]) -> server.Host[hfhub_node.HubNode]:
    """A hub with `repos` (each starts with one commit on `main`); `pull_rate` bytes/s."""
    node = hfhub_node.HubNode(0, options.get("repos", ()), options.get("pull_rate"))
    return server.Host(Flavour(), [node])


def running(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[Options]
) -> AbstractAsyncContextManager[Emulator]:
    """`async with hfhub.running(repos=[...]) as emu:` serve in the current loop."""
    return runner.running(build(**options), host, port)


def in_thread(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[Options]
) -> AbstractContextManager[Emulator]:
    """`with hfhub.in_thread(repos=[...]) as emu:` serve from a background thread."""
    return runner.in_thread(lambda: build(**options), host, port)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    announce: Callable[[Emulator], None] | None = None,
    **options: Unpack[Options],
) -> None:
    """Serve until Ctrl-C; `announce(emulator)` runs once the socket listens."""
    runner.serve(lambda: build(**options), host, port, announce)


class Flavour:
    """The hub's routes and its plain JSON error bodies."""

    name = "hfhub"

    def routes(self, node: hfhub_node.HubNode, path: str) -> Routes | None:
        if _INFO.match(path):
            return {"GET": model_info}
        if _TREE.match(path):
            return {"GET": tree}
        if _RESOLVE.match(path):
            return {"HEAD": resolve_head, "GET": resolve_get}
        return None

    def refuse(
        self, node: hfhub_node.HubNode, request: web.Request, path: str
    ) -> web.Response | None:
        return None

    def not_found(self) -> web.Response:
        return server.json_response({"error": "Not Found"}, status=404)

    def method_not_allowed(self) -> web.Response:
        return server.json_response({"error": "Method Not Allowed"}, status=405)

    def internal_error(self, node: hfhub_node.HubNode, status: int, path: str) -> web.Response:
        return hub_error(status, None, "Internal Error")


def hub_error(
    status: int, code: str | None, message: str, commit: str | None = None
) -> web.Response:
    """An error as the hub sends it: headers for HEAD (no body), `{"error"}` for the rest."""
    response = server.json_response({"error": message}, status=status)
    if code is not None:
        response.headers["X-Error-Code"] = code
    response.headers["X-Error-Message"] = message
    if commit is not None:
        response.headers["X-Repo-Commit"] = commit
    return response


def _token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _repo(call: Call, repo_id: str, files: bool) -> hfhub_repos.Repo | web.Response:
    """The repo if the caller may see it (and download from it when `files`), else the error."""
    token = _token(call.request)
    repo = call.node.repos.get(repo_id)
    if repo is None or not repo.readable(token):
        return hub_error(401 if token is None else 404, "RepoNotFound", "Repository not found")
    if files and not repo.downloadable(token):
        if token is None:
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            return hub_error(401, "GatedRepo", message)
        message = (
            f"Access to model {repo_id} is restricted and you are not in the authorized list. "
            f"Visit the model's page to ask for access."
        )
        return hub_error(403, "GatedRepo", message)
    return repo


def _commit(
    call: Call, pattern: re.Pattern[str], files: bool
) -> tuple[hfhub_repos.Repo, hfhub_repos.Commit, re.Match[str]] | web.Response:
    match = pattern.match(call.path)
    assert match is not None  # routes() matched it
    repo = _repo(call, match["repo"], files)
    if isinstance(repo, web.Response):
        return repo
    commit = repo.resolve(match["rev"])
    if commit is None:
        return hub_error(404, "RevisionNotFound", f"Invalid rev id: {match['rev']}")
    return repo, commit, match


async def model_info(call: Call) -> web.StreamResponse:
    """`GET /api/models/{repo}/revision/{rev}`."""
    found = _commit(call, _INFO, files=False)
    if isinstance(found, web.Response):
        return found
    repo, commit, _ = found
    return server.json_response(
        {
            "_id": hashlib.sha1(repo.id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.id,
            "modelId": repo.id,
            "author": repo.id.partition("/")[0] if "/" in repo.id else None,
            "sha": commit.sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
    )


async def tree(call: Call) -> web.StreamResponse:
    """`GET /api/models/{repo}/tree/{rev}[/{dir}]`: files and directories, recursively."""
    found = _commit(call, _TREE, files=False)
    if isinstance(found, web.Response):
        return found
    _, commit, match = found
    prefix = f"{match['dir']}/" if match["dir"] else ""
    recursive = call.request.query.get("recursive", "false").lower() == "true"
    entries: dict[str, dict[str, object]] = {}
    for path, file in sorted(commit.files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):
            folder = prefix + "/".join(rest[:depth])
            oid = hashlib.sha1(folder.encode(), usedforsecurity=False).hexdigest()
            entries.setdefault(folder, {"type": "directory", "oid": oid, "size": 0, "path": folder})
            if not recursive:
                break
        if recursive or len(rest) == 1:
            entries[path] = _file_entry(file)
    return server.json_response([entries[key] for key in sorted(entries)])


def _file_entry(file: hfhub_repos.File) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "oid": file.oid, "size": file.size}
    if file.lfs:
        entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": len(file.pointer)}
    entry["path"] = file.path
    return entry


def _file(
    call: Call,
) -> tuple[hfhub_repos.Repo, hfhub_repos.Commit, hfhub_repos.File] | web.Response:
    found = _commit(call, _RESOLVE, files=True)
    if isinstance(found, web.Response):
        return found
    repo, commit, match = found
    file = commit.files.get(match["file"])
    if file is None:
        return hub_error(404, "EntryNotFound", "Entry not found", commit=commit.sha)
    return repo, commit, file


def _file_headers(commit: hfhub_repos.Commit, file: hfhub_repos.File) -> dict[str, str]:
    headers = {
        "X-Repo-Commit": commit.sha,
        "ETag": f'"{file.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if file.lfs:
        headers["X-Linked-Etag"] = f'"{file.etag}"'
        headers["X-Linked-Size"] = str(file.size)
    return headers


async def resolve_head(call: Call) -> web.StreamResponse:
    """`HEAD /{repo}/resolve/{rev}/{path}`: the metadata headers, no body."""
    found = _file(call)
    if isinstance(found, web.Response):
        return found
    _, commit, file = found
    response = web.StreamResponse(headers=_file_headers(commit, file))
    response.content_length = file.size
    await response.prepare(call.request)
    await response.write_eof()
    return response


async def resolve_get(call: Call) -> web.StreamResponse:
    """`GET /{repo}/resolve/{rev}/{path}`: the bytes, ranged, paced, maybe cut."""
    found = _file(call)
    if isinstance(found, web.Response):
        return found
    repo, commit, file = found
    span = _span(call.request.headers.get("Range"), file.size)
    if span is None:
        refusal = hub_error(416, None, "Requested Range Not Satisfiable")
        refusal.headers["Content-Range"] = f"bytes */{file.size}"
        return refusal
    start, end = span
    fault = call.node.take_fault(file.path)
    if fault is not None and fault.status is not None:
        call.node.downloads.append(
            hfhub_node.Download(repo.id, file.path, start, 0, f"status {fault.status}")
        )
        return hub_error(fault.status, None, "Internal Error")
    ranged = "Range" in call.request.headers
    response = web.StreamResponse(
        status=206 if ranged else 200, headers=_file_headers(commit, file)
    )
    if ranged:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
    response.content_length = end - start
    await response.prepare(call.request)
    limit = None if fault is None else fault.after_bytes
    sent = [0]
    try:
        await _send(call, response, file, (start, end), limit, sent)
    except (ConnectionError, asyncio.CancelledError):  # the client went away mid-body
        call.node.downloads.append(
            hfhub_node.Download(repo.id, file.path, start, sent[0], "client gone")
        )
        raise
    cut = limit is not None and sent[0] >= limit and sent[0] < end - start
    outcome = "reset" if cut else "complete"
    call.node.downloads.append(hfhub_node.Download(repo.id, file.path, start, sent[0], outcome))
    if cut:
        if call.request.transport is not None:
            call.request.transport.close()  # flushes what was written, then FIN mid-body
        return response
    await response.write_eof()
    return response


async def _send(
    call: Call,
    response: web.StreamResponse,
    file: hfhub_repos.File,
    span: tuple[int, int],
    limit: int | None,
    sent: list[int],
) -> None:
    """Write [start, end) of `file`, at most `limit` bytes, at the node's pull rate.

    `sent[0]` counts the bytes written so far, also when the client leaves midway.
    """
    for chunk in file.chunks(*span):
        for offset in range(0, len(chunk), _PIECE):
            piece = chunk[offset : offset + _PIECE]
            if limit is not None and sent[0] + len(piece) > limit:
                piece = piece[: limit - sent[0]]
            await response.write(piece)
            sent[0] += len(piece)
            if limit is not None and sent[0] >= limit:
                return
            if call.node.pull_rate:
                await asyncio.sleep(len(piece) / call.node.pull_rate)


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) asked by a `Range` header; the whole file without one; None if bad."""
    if header is None:
        return 0, size
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    start = int(match[1])
    end = min(size, int(match[2]) + 1) if match[2] else size
    if start >= size or end <= start:
        return None
    return start, end
