"""``llmctl watch``: follow downloads live from NATS: a progress bar per job, or JSON lines.

Registered on the root app by `controller.cli`. It subscribes with `dwqueue.subscriber.Watch`
(which first replays the latest event of every job where JetStream keeps them), then reads the
database once for the current state of every active job (and of every job the replay left
looking active), so a watch started mid-download shows where each one is even on plain NATS.
From then on it follows events. Newer events win by the job's ``seq``, whichever source they
came from. The database read is best effort: without it the watch shows NATS events only.

Output (drawn by `controller.watchview`): rich progress bars on stdout (model, backend, percent,
rate, ETA, phase; finished jobs stay with their final state; jobs that had already finished
before the watch began are not shown), or ``--json``: each event's wire JSON on its own line,
flushed at once, for scripts.
NATS is found as the other commands find it: ``--nats-url`` / ``LLMCTL_NATS_URL``, else the
embedded server of a ``serve`` running on this machine (the URL it wrote in the data directory);
a discovered URL is followed when that ``serve`` restarts on another port
(`controller.natsconnection`). Notes about the connection go on lines of their own, above the
bars. Exit codes: 0 on Ctrl-C, at ``--timeout``, or with ``--exit-when-idle`` once nothing is
queued or running; 1 when NATS cannot be reached (within ``--timeout`` when given), or
``--exit-when-idle`` timed out with work left; 2 for invalid input (no NATS URL to use, a bad
backend name or subject prefix), with the message saying how to fix it. It changes nothing
(beyond migrating an existing embedded SQLite database, as every command does; it never creates
one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import os
import pathlib
import sys
from collections.abc import Collection
from typing import Annotated, assert_never

import typer

from controller import natsconnection, runner, trigger, watchview
from dwqueue import events, jobs, queue, subscriber
from runtimestate import database, errors
from runtimestate.desired import names

_SETTLE_QUIET_S = 0.3  # the JetStream replay arrives in one burst; this much silence ends it
_SETTLE_MAX_S = 2.0


# --- what the watch knows: pure ----------------------------------------------------------------


class Board:
    """The newest event of every job seen so far, from NATS or the database."""

    def __init__(self) -> None:
        self.latest: dict[str, events.DownloadEvent] = {}

    def apply(self, event: events.DownloadEvent) -> bool:
        """Keep ``event`` if it is newer than what is known of its job; True when kept."""
        known = self.latest.get(event.job_id)
        if known is not None and known.seq >= event.seq:
            return False
        self.latest[event.job_id] = event
        return True

    def active(self) -> list[str]:
        """Ids of the jobs whose newest event says they are queued or running."""
        return [job_id for job_id, event in self.latest.items() if not event.TERMINAL]


def snapshot_event(job: jobs.Job) -> events.DownloadEvent:
    """The event that describes a stored job as it is now (its ``seq`` and last update)."""
    cls: type[events.DownloadEvent]
    match job.state:
        case jobs.JobState.QUEUED:
            cls = events.DownloadRetrying if job.attempts else events.DownloadQueued
        case jobs.JobState.RUNNING:
            cls = events.DownloadProgressed if job.progress.status else events.DownloadStarted
        case jobs.JobState.SUCCEEDED:
            cls = events.DownloadSucceeded
        case jobs.JobState.FAILED:
            cls = events.DownloadFailed
        case jobs.JobState.CANCELLED:
            cls = events.DownloadCancelled
        case _:
            assert_never(job.state)
    updated = job.updated_at if job.updated_at.tzinfo else job.updated_at.replace(tzinfo=dt.UTC)
    return events.of(cls, job, updated)


# --- the command -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    nats_url: str
    discovered_in: pathlib.Path | None  # the data directory the URL came from, if it did
    prefix: str
    backend: str | None
    exit_when_idle: bool
    timeout_s: float | None


def watch_command(
    ctx: typer.Context,
    backend: Annotated[str | None, typer.Option("--backend", help="Only this backend")] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print each event's JSON on its own line")
    ] = False,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Exit 0 once nothing is queued or running")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.0, help="Stop after this many seconds")
    ] = None,
) -> None:
    """Follow downloads live: one progress bar per job, from NATS (Ctrl-C to stop)."""
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    data_dir = trigger.data_dir_from_environment(env.environ)
    url = trigger.target_url(env.nats_url, data_dir)
    if not url:
        env.fail(
            "watch reads download events from NATS: give the server as "
            "llmctl --nats-url nats://HOST:4222 watch, or set LLMCTL_NATS_URL; with neither, "
            f"it uses the embedded NATS of a llmctl serve running on this machine (none "
            f"announced in {data_dir}, the data directory; LLMCTL_DATA_DIR sets it)"
        )
    _check_filter(env, backend)
    if timeout is not None and not math.isfinite(timeout):
        env.fail(f"--timeout must be a finite number of seconds, not {timeout}")
    discovered = None if env.nats_url else data_dir
    options = Options(url, discovered, env.prefix, backend, exit_when_idle, timeout)
    sink: watchview.Sink = (
        watchview.JsonLines()
        if json_lines
        else watchview.Bars(env.out, dt.datetime.now(dt.UTC), env.err)
    )
    try:
        code = asyncio.run(_watch(env, options, sink))
    except KeyboardInterrupt:
        code = 0
    except BrokenPipeError:  # the reader went away (``| head``): done, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    raise typer.Exit(code)


def _check_filter(env: runner.Env, backend: str | None) -> None:
    """Exit 2 with the fix for a prefix or backend that cannot make a subject filter."""
    try:
        events.check_prefix(env.prefix)
    except ValueError as exc:
        env.fail(f"--subject-prefix: {exc} (LLMCTL_SUBJECT_PREFIX; the default is llmctl)")
    if backend is None:
        return
    try:
        names.check_dns_label(backend, "backend")
    except names.InvalidName as exc:
        env.fail(
            f"--backend: {exc}; give the name of a declared backend, as llmctl backend list "
            "shows it, or leave --backend out to watch every backend"
        )


async def _watch(env: runner.Env, options: Options, sink: watchview.Sink) -> int:
    loop = asyncio.get_running_loop()
    deadline = None if options.timeout_s is None else loop.time() + options.timeout_s
    connection = natsconnection.Connection(sink.note, options.discovered_in)
    connect_s = natsconnection.CONNECT_TIMEOUT_S
    problem = await connection.open(
        options.nats_url,
        connect_s if options.timeout_s is None else min(connect_s, options.timeout_s),
    )
    if problem is not None:
        env.err.print(
            f"error: cannot connect to NATS at {options.nats_url}: {problem}", markup=False
        )
        return 1
    sink.start()
    try:
        async with subscriber.Watch(
            connection.nc, prefix=options.prefix, backend=options.backend
        ) as w:
            if not w.replaying:
                sink.note("note: no JetStream replay stream on this server")
            connection.on_reconnected = lambda: _resubscribe(w, sink)
            return await _follow(env, options, w, sink, deadline)
    finally:
        sink.stop()
        await connection.close()


async def _resubscribe(w: subscriber.Watch, sink: watchview.Sink) -> None:
    """Subscribe again after a reconnection: a JetStream consumer does not survive a server
    restart, and the replay brings back what was missed (older events are ignored by seq)."""
    try:
        await w.close()
        await w.open()
    except natsconnection.NATS_ERRORS as exc:
        sink.note(f"note: could not subscribe again ({exc or type(exc).__name__}); retrying later")


async def _follow(
    env: runner.Env,
    options: Options,
    w: subscriber.Watch,
    sink: watchview.Sink,
    deadline: float | None,
) -> int:
    """Settle the replay, merge the database's view, then follow events until told to stop."""
    loop = asyncio.get_running_loop()
    board = Board()

    def take(event: events.DownloadEvent) -> None:
        if board.apply(event):
            sink.show(event)

    settle_until = loop.time() + _SETTLE_MAX_S
    if deadline is not None:
        settle_until = min(settle_until, deadline)
    while event := await _next(w, min(_SETTLE_QUIET_S, settle_until - loop.time())):
        take(event)
    stored, problem = await asyncio.to_thread(
        _read_jobs, env.database_url, options.backend, board.active()
    )
    if problem:
        sink.note(f"note: {problem}; showing NATS events only")
    for job in stored:
        take(snapshot_event(job))
    while not (options.exit_when_idle and not board.active()):
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return _timed_out(env, options, board)
        if event := await _next(w, remaining):
            take(event)
    return 0


async def _next(w: subscriber.Watch, timeout_s: float | None) -> events.DownloadEvent | None:
    if timeout_s is not None and timeout_s <= 0:
        return None
    try:
        return await w.next(timeout_s)
    except TimeoutError:
        return None


def _timed_out(env: runner.Env, options: Options, board: Board) -> int:
    if not options.exit_when_idle:
        return 0
    env.err.print(
        f"timed out after {options.timeout_s:g} s with {len(board.active())} download(s) "
        "still queued or running",
        markup=False,
    )
    return 1


def _read_jobs(
    url: str, backend: str | None, job_ids: Collection[str]
) -> tuple[list[jobs.Job], str | None]:
    """Active jobs and the named ones from the database, or why they could not be read.

    Runs in a worker thread: it migrates an embedded SQLite database as every command does, but
    never creates one."""
    try:
        with database.guarded():
            runner.ensure_schema(url, create=False)
            return asyncio.run(_stored_jobs(url, backend, job_ids)), None
    except (*runner.USER_ERRORS, errors.DatabaseUnavailable) as exc:
        return [], f"cannot read downloads from the database at {database.redact(url)}: {exc}"


async def _stored_jobs(url: str, backend: str | None, job_ids: Collection[str]) -> list[jobs.Job]:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            found = {
                job.id: job
                for job in await queue.list_jobs(
                    session, backend=backend, states=jobs.ACTIVE_STATES
                )
            }
            for job_id in set(job_ids) - set(found):
                job = await queue.get(session, job_id)
                if job is not None:
                    found[job.id] = job
            return list(found.values())
    finally:
        await engine.dispose()
