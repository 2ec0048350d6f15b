"""What ``llmctl watch`` follows: NATS download events merged with the database's jobs.

Called by `controller.watch` once its options are checked (`follow`). It subscribes with
`dwqueue.subscriber.Watch`, reads the database once for the active jobs (best effort), and hands
every newer event (by the job's ``seq``) to the sink. The module docstring of `controller.watch`
describes the behaviour a user sees; this one holds the machinery, so that ``llmctl watch
--help`` imports no NATS client and no database driver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection
from typing import TYPE_CHECKING, assert_never

from controller import natsconnection, runner, watchview
from dwqueue import events, jobs, queue, subscriber
from runtimestate import database, errors

if TYPE_CHECKING:
    from controller.watch import Options

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


# --- following -------------------------------------------------------------------------------


async def follow(env: runner.Env, options: Options, sink: watchview.Sink) -> int:
    loop = asyncio.get_running_loop()
    deadline = None if options.timeout_s is None else loop.time() + options.timeout_s
    connection = natsconnection.Connection(sink.note, options.discovered_in, options.auth)
    connect_s = natsconnection.CONNECT_TIMEOUT_S
    problem = await connection.open(
        options.nats_url,
        connect_s if options.timeout_s is None else min(connect_s, options.timeout_s),
    )
    if problem is not None:
        env.err.print(f"error: {problem}", markup=False)
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
    except Exception as exc:
        if not isinstance(exc, (*runner.user_errors(), errors.DatabaseUnavailable)):
            raise
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
