"""The node's weights cache: pull, list and delete model weights, for the agent's HTTP API.

`Cache(root)` keeps Hugging Face snapshots under `root/hub` in huggingface_hub's own layout
(`models--{org}--{name}/blobs|snapshots|refs`, PROTOCOLS §A.7), so `vllm serve` can be given the
snapshot path and the client itself resumes and de-duplicates. Local weights (an absolute path
to a directory the operator manages) are *recorded, not copied*: `root/local.json` maps the path
to its size, `delete` forgets the record and never touches the directory.

`pull` (async; the blocking client runs in a thread):
1. checks the names (`nodeagent.names`): nothing escapes `root`;
2. asks the hub for the revision's commit and file tree, counts the bytes already in `blobs/`,
   and refuses before the first byte when the rest exceeds the free disk (`insufficient_disk`,
   with bytes needed and free; `disk_usage` is injectable, `shutil.disk_usage` by default);
3. downloads the pinned commit with `snapshot_download` (its `.incomplete` files resume inside
   the call after a cut connection, §A.4/§A.x; a retried pull skips the finished files), and
   writes `refs/{revision}`; byte progress goes to `on_progress` on the caller's event loop;
   a `stop` flag ends the download within one network read (`nodeagent.cancellation`).
   Until a pull of a repo succeeds, `root/unfinished/<repo folder>` hides the repo from `list`:
   the files a failed or cancelled pull left are reused by the next pull, never served.
Failures are `WeightsError`s classed for the controller's retry policy: `permanent` (missing,
gated or private repo, unknown revision: the hub's reason), `transient` (5xx, network),
`insufficient_disk`, `invalid` (a bad name or path). The endpoint and token are explicit or
huggingface_hub's defaults (`HF_ENDPOINT`, `HF_TOKEN`); the token is never logged or shown.
Not safe against two pulls of one repo at once from two `Cache`s (the client's file locks
serialise the blobs, but not the disk check). Imports nothing of ours but `nodeagent`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import enum
import json
import os
import pathlib
import shutil
import stat
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import httpx2
from huggingface_hub import errors, snapshot_download

from nodeagent import cancellation, names, progress, sizes


class FreeSpace(Protocol):
    """What the disk check reads from `shutil.disk_usage(path)`."""

    @property
    def free(self) -> int: ...


class DiskUsage(NamedTuple):
    """A `shutil.disk_usage` result, for callers that declare their own free space."""

    total: int
    used: int
    free: int


DiskUsageFn = Callable[[pathlib.Path], FreeSpace]
ProgressFn = Callable[[progress.Progress], None]


class ErrorKind(enum.StrEnum):
    """How the controller should treat a failed pull."""

    PERMANENT = "permanent"  # the hub said no: retrying cannot help
    TRANSIENT = "transient"  # 5xx, network: retry with backoff
    INSUFFICIENT_DISK = "insufficient_disk"  # hold until space is freed
    INVALID = "invalid"  # a bad name, revision or path: fix the request


class WeightsError(Exception):
    """A pull or delete that failed; `kind` classes it, `str()` says what and why."""

    def __init__(self, kind: ErrorKind, message: str, needed: int = 0, free: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.needed = needed
        self.free = free


@dataclasses.dataclass(frozen=True)
class Weights:
    """One cached model: a Hub repo (`source="hub"`) or a recorded local directory."""

    name: str  # the repo id, or the local directory's absolute path
    source: str  # "hub" or "local"
    path: pathlib.Path  # what to give `vllm serve`: the snapshot or the local directory
    size: int  # bytes on disk (a repo's blobs, shared by its snapshots)
    commit: str | None = None  # the snapshot `path` points at (refs/main first)
    refs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # revision -> commit
    commits: tuple[str, ...] = ()  # every snapshot present


class Cache:
    """The weights cache under `root` (created on first use)."""

    def __init__(
        self,
        root: pathlib.Path,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        disk_usage: DiskUsageFn = shutil.disk_usage,
        max_workers: int = 8,
    ) -> None:
        self.root = root
        self.hub = root / "hub"
        self._endpoint = endpoint
        self._token = token
        self._disk_usage = disk_usage
        self._max_workers = max_workers

    def __repr__(self) -> str:  # never the token
        return f"Cache(root={str(self.root)!r}, endpoint={self._endpoint!r})"

    async def pull(
        self,
        source: str,
        revision: str | None = None,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> Weights:
        """Make `source` present: a repo id (at `revision`, default main) or a local path.

        Idempotent: a present snapshot downloads nothing. `on_progress` runs on this event
        loop with monotonic `Progress` values ending at the total. Setting `stop` ends a hub
        download within a network read (`nodeagent.cancellation`; finished files stay cached)
        with a transient WeightsError. Raises WeightsError.
        """
        sink = _loop_sink(on_progress)
        try:
            if names.is_local(source):
                if revision is not None:
                    raise names.InvalidName("a local weights path takes no revision: drop it")
                return await asyncio.to_thread(self._record_local, names.local_path(source), sink)
            repo = names.repo_id(source)
            rev = names.revision(revision or "main")
        except names.InvalidName as exc:
            raise WeightsError(ErrorKind.INVALID, str(exc)) from exc
        return await asyncio.to_thread(self._pull_hub, repo, rev, sink, stop)

    async def size(self, source: str, revision: str | None = None) -> sizes.Measured:
        """What a pull of the hub repo `source` would take, and how much of it is cached.
        Raises WeightsError: invalid (a bad name, or a local path), permanent, transient."""
        try:
            if names.is_local(source):
                raise names.InvalidName("a local weights path has no hub size: give org/name")
            repo, rev = names.repo_id(source), names.revision(revision or "main")
        except names.InvalidName as exc:
            raise WeightsError(ErrorKind.INVALID, str(exc)) from exc
        try:
            return await asyncio.to_thread(
                sizes.measure, self.hub, repo, rev, self._endpoint, self._token
            )
        except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, httpx2.HTTPError) as exc:
            raise _classified(repo, rev, exc) from exc

    async def list(self) -> builtins.list[Weights]:
        """Every cached repo and recorded local directory, sorted by name."""
        return await asyncio.to_thread(self._list)

    async def delete(self, name: str) -> bool:
        """Remove a repo's cache folder, or forget a local record; False when absent.

        A symlinked repo folder loses the link only; its target is never followed.
        Raises WeightsError(INVALID) for a name that is neither.
        """
        return await asyncio.to_thread(self._delete, name)

    # -- Hub pulls (in a worker thread) -------------------------------------------------

    def _pull_hub(
        self, repo: str, rev: str, sink: ProgressFn, stop: threading.Event | None
    ) -> Weights:
        cancellation.install()
        try:
            plan = self._plan(repo, rev)
            unfinished = self._unfinished(repo)
            unfinished.parent.mkdir(parents=True, exist_ok=True)
            unfinished.touch()  # hides the repo from `list` until a pull of it succeeds
            meter = progress.Meter(plan.cached, plan.total, sink)
            meter.start()
            with cancellation.watching(repo, plan.commit, stop or threading.Event()):
                snapshot_download(
                    repo,
                    revision=plan.commit,
                    cache_dir=self.hub,
                    endpoint=self._endpoint,
                    token=self._token,
                    max_workers=self._max_workers,
                    tqdm_class=meter.bar_class(),
                )
        except cancellation.Cancelled as exc:
            raise WeightsError(ErrorKind.TRANSIENT, f"{repo}@{rev}: {exc}") from exc
        except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, httpx2.HTTPError) as exc:
            raise _classified(repo, rev, exc) from exc
        except OSError as exc:  # disk full, consistency check: the next try may succeed
            raise WeightsError(ErrorKind.TRANSIENT, f"{repo}@{rev}: {exc}") from exc
        if rev != plan.commit:  # what the client writes itself when given the branch
            ref = self.hub / names.repo_folder(repo) / "refs" / rev
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(plan.commit)
        unfinished.unlink(missing_ok=True)
        meter.finish()
        return self._describe(repo, plan.commit)

    def _unfinished(self, repo: str) -> pathlib.Path:
        """The marker of a pull of `repo` that has not succeeded (yet): files of a failed or
        cancelled pull stay for the next one to skip, but are not weights to serve."""
        return self.root / "unfinished" / names.repo_folder(repo)

    def _plan(self, repo: str, rev: str) -> sizes.Measured:
        """The commit and tree from the hub; refuse when the missing bytes do not fit."""
        plan = sizes.measure(self.hub, repo, rev, self._endpoint, self._token)
        self.hub.mkdir(parents=True, exist_ok=True)
        free = self._disk_usage(self.hub).free
        needed = plan.total - plan.cached
        if needed > free:
            raise WeightsError(
                ErrorKind.INSUFFICIENT_DISK,
                f"{repo}@{rev} needs {needed} more bytes on disk, {free} are free under "
                f"{self.root}: free space or pick a node with more disk",
                needed=needed,
                free=free,
            )
        return plan

    # -- Local directories ----------------------------------------------------------------

    def _record_local(self, path: pathlib.Path, sink: ProgressFn) -> Weights:
        if not path.is_dir():
            raise WeightsError(
                ErrorKind.INVALID,
                f"local weights path {str(path)!r} is not a directory: give the absolute path "
                "of an existing weights directory",
            )
        size = _tree_size(path, follow=True)
        records = self._local_records()
        records[str(path)] = size
        self._save_local_records(records)
        sink(progress.Progress(size, size))
        return Weights(name=str(path), source="local", path=path, size=size)

    def _local_records(self) -> dict[str, int]:
        try:
            data: Any = json.loads((self.root / "local.json").read_text())
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _save_local_records(self, records: Mapping[str, int]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / "local.json.tmp"
        temporary.write_text(json.dumps(dict(sorted(records.items())), indent=1))
        temporary.replace(self.root / "local.json")  # atomic: a crash keeps the old record

    # -- Listing and deleting -------------------------------------------------------------

    def _list(self) -> builtins.list[Weights]:
        found: builtins.list[Weights] = []
        if self.hub.is_dir():
            for folder in sorted(self.hub.iterdir()):
                repo = names.repo_of_folder(folder.name)
                if repo is None or not folder.is_dir() or folder.is_symlink():
                    continue
                if not self._unfinished(repo).exists():
                    found.append(self._describe(repo))
        for path, size in self._local_records().items():
            found.append(Weights(name=path, source="local", path=pathlib.Path(path), size=size))
        return sorted(found, key=lambda w: w.name)

    def _describe(self, repo: str, pulled: str | None = None) -> Weights:
        """The repo as cached; `path` is the `pulled` snapshot, else main's, else the newest."""
        folder = self.hub / names.repo_folder(repo)
        refs = _refs(folder / "refs")
        snapshots = folder / "snapshots"
        commits = tuple(
            sorted(p.name for p in snapshots.iterdir() if names.is_commit(p.name))
            if snapshots.is_dir()
            else ()
        )
        commit = pulled or (refs.get("main") if refs.get("main") in commits else None)
        if commit is None and commits:
            commit = max(commits, key=lambda c: (snapshots / c).stat().st_mtime)
        return Weights(
            name=repo,
            source="hub",
            path=snapshots / commit if commit else folder,
            size=_tree_size(folder / "blobs"),
            commit=commit,
            refs=refs,
            commits=commits,
        )

    def _delete(self, name: str) -> bool:
        if names.is_local(name):
            records = self._local_records()
            if records.pop(name, None) is None:
                return False
            self._save_local_records(records)
            return True
        try:
            folder = self.hub / names.repo_folder(name)
        except names.InvalidName as exc:
            raise WeightsError(ErrorKind.INVALID, str(exc)) from exc
        (self.root / "unfinished" / folder.name).unlink(missing_ok=True)
        locks = self.hub / ".locks" / folder.name
        if locks.is_dir() and not locks.is_symlink():
            shutil.rmtree(locks)
        if folder.is_symlink():
            folder.unlink()  # the link only: its target is not ours
            return True
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True


def _classified(repo: str, rev: str, exc: Exception) -> WeightsError:
    """The hub's refusal as a WeightsError: permanent for 4xx answers, else transient."""
    where = f"{repo}@{rev}"
    if isinstance(exc, errors.GatedRepoError):
        return WeightsError(ErrorKind.PERMANENT, f"{where} is gated: {_reason(exc)}")
    if isinstance(exc, errors.RepositoryNotFoundError):
        reason = _reason(exc)
        return WeightsError(
            ErrorKind.PERMANENT,
            f"{where}: {reason} (missing, or private without a token that has access)",
        )
    if isinstance(exc, errors.RevisionNotFoundError | errors.RemoteEntryNotFoundError):
        return WeightsError(ErrorKind.PERMANENT, f"{where}: {_reason(exc)}")
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if 400 <= status < 500 and status not in (408, 429):
            return WeightsError(ErrorKind.PERMANENT, f"{where}: {status} {_reason(exc)}")
        return WeightsError(ErrorKind.TRANSIENT, f"{where}: the hub answered {status}")
    return WeightsError(ErrorKind.TRANSIENT, f"{where}: cannot reach the hub ({_reason(exc)})")


def _reason(exc: Exception) -> str:
    """The hub's own message (X-Error-Message) if it sent one, else the first line."""
    message = getattr(exc, "server_message", None)
    if message:
        return str(message).strip()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _refs(folder: pathlib.Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    refs: dict[str, str] = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            sha = path.read_text().strip()
            if names.is_commit(sha):
                refs[path.relative_to(folder).as_posix()] = sha
    return refs


def _tree_size(folder: pathlib.Path, follow: bool = False) -> int:
    """Bytes of the regular files under `folder`; file symlinks count only when `follow`."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):  # a dangling link, a file deleted meanwhile
                info = os.stat(path) if follow else os.lstat(path)
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def _loop_sink(on_progress: ProgressFn | None) -> ProgressFn:
    """Deliver progress on the caller's event loop, in order, without blocking the thread."""
    if on_progress is None:
        return lambda _: None
    loop = asyncio.get_running_loop()
    callback = on_progress

    def sink(value: progress.Progress) -> None:
        loop.call_soon_threadsafe(callback, value)

    return sink
