"""Live lists: ``backend list --watch`` and ``downloads list --watch``, like ``kubectl get -w``.

Called by `controller.declare` and `controller.downloads` (imported inside their list commands,
only when ``--watch`` is given). The list is read from the database once, shown, and read again
whenever something may have changed; it is shown again only when it did change:

- with NATS (``--nats-url``, ``LLMCTL_NATS_URL``, or the embedded server of a ``serve`` on this
  machine), a message on one of the list's subjects (`Source.subjects`: status changes, cycle
  summaries, download events, control requests) is the cue: the database is read again at most
  every `MIN_REDRAW_S` (events arriving meanwhile are covered by that read), and again after
  every reconnection (what was missed while away);
- without NATS, or when it cannot be reached, the database is polled every `POLL_S`; that is
  said once on standard error.

`Screen` shows each version: on a terminal the table is redrawn in place (cursor moved up over
the previous drawing, which is then cleared: plain ANSI, no rich.live); elsewhere each version is
printed whole, the tables separated by a blank line; ``-o json`` prints each version as one JSON
line and ``-o yaml`` as one ``---`` document. Fields that move on their own (`Source.volatile`:
a probe's or a lease's heartbeat time) are not a change. Exit codes: 0 on Ctrl-C or when the
reader of a pipe goes away; 1 when the database cannot be used; 2 for invalid input. It writes
nothing (beyond migrating an existing embedded SQLite database, as every command does).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

import yaml
from rich.console import Console

from controller import output, runner

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from sqlalchemy.ext.asyncio import AsyncSession

    from controller import natsconnection

POLL_S = 1.0  # the polling fallback reads the database this often
MIN_REDRAW_S = 0.25  # event-driven reads (and so redraws) at most four times a second
CONNECT_S = 2.0  # how long NATS may take to answer before the watch polls instead

Doc = dict[str, Any]
Render = Callable[[Sequence[Doc], output.Format, Console], None]


@dataclasses.dataclass(frozen=True)
class Source:
    """What a live list shows and when to look again."""

    read: Callable[[AsyncSession], Awaitable[list[Doc]]]  # the documents, in one transaction
    render: Render  # the table (or wide table) of the documents
    subjects: tuple[str, ...]  # after ``<prefix>.``: a message on one means "read again"
    volatile: tuple[tuple[str, ...], ...] = ()  # paths of fields whose change alone is no change


def change_key(docs: Sequence[Doc], volatile: Sequence[Sequence[str]]) -> str:
    """What two readings are compared by: the documents without their `volatile` fields."""
    trimmed = [_without(doc, volatile) for doc in docs]
    return json.dumps(trimmed, sort_keys=True, default=str)


def _without(doc: Doc, paths: Sequence[Sequence[str]]) -> Doc:
    copy = dict(doc)
    for path in paths:
        head, *rest = path
        if head not in copy:
            continue
        if rest and isinstance(copy[head], dict):
            copy[head] = _without(copy[head], [rest])
        elif not rest:
            del copy[head]
    return copy


class Screen:
    """Shows each version of the list: redrawn in place on a terminal, appended elsewhere."""

    def __init__(
        self, console: Console, fmt: output.Format, render: Render, *, in_place: bool
    ) -> None:
        self._console = console
        self._fmt = fmt
        self._render = render
        self._in_place = in_place
        self._drawn_lines = 0  # lines of the table on screen now, to move back over
        self._shown = 0

    @property
    def file(self) -> IO[str]:
        return self._console.file

    def show(self, docs: Sequence[Doc]) -> None:
        if self._fmt is output.Format.JSON:
            text = json.dumps(list(docs), separators=(",", ":")) + "\n"
        elif self._fmt is output.Format.YAML:
            text = yaml.safe_dump(list(docs), sort_keys=False, explicit_start=True)
        else:
            # Drawn into a console of its own: tables are written straight to the console's
            # file (`output.write`), which rich's capture would not see.
            drawn = io.StringIO()
            self._render(docs, self._fmt, Console(file=drawn, width=self._console.width))
            text = self._place(drawn.getvalue())
        self.file.write(text)
        self.file.flush()
        self._shown += 1

    def _place(self, table: str) -> str:
        """The table, preceded by what puts it where the previous one was (or below it)."""
        before = ""
        if self._in_place and self._drawn_lines >= self._console.height:
            # Scrolled partly off the screen: the cursor cannot go back over it. Clear the
            # screen and start at the top, as watch(1) does.
            before = "\x1b[H\x1b[2J"
        elif self._in_place and self._drawn_lines:
            before = f"\x1b[{self._drawn_lines}A\r\x1b[J"  # up over the last drawing, clear it
        elif self._shown:
            before = "\n"
        self._drawn_lines = table.count("\n")
        return before + table

    def noted(self) -> None:
        """A note went to the terminal below the table: draw the next table below it."""
        self._drawn_lines = 0


def watch(env: runner.Env, source: Source, fmt: output.Format) -> None:
    """Show the list, then follow it until Ctrl-C; exits (0, or 1 when the database fails)."""
    screen = Screen(env.out, fmt, source.render, in_place=env.out.file.isatty())

    def follow() -> int:
        _check(env)
        return asyncio.run(_follow(env, source, screen))

    runner.until_stopped(follow)


def _check(env: runner.Env) -> None:
    """Exit 2 or 1 (one line) before anything is shown, as the plain list would."""
    from dwqueue import events
    from runtimestate import database, errors

    try:
        events.check_prefix(env.prefix)
    except ValueError as exc:
        env.fail(f"--subject-prefix: {exc} (LLMCTL_SUBJECT_PREFIX; the default is llmctl)")
    try:
        with database.guarded():
            runner.ensure_schema(env.database_url, create=False)
    except runner.user_errors() as exc:
        env.fail(str(exc))
    except errors.DatabaseUnavailable as exc:
        env.fail(_unavailable(env, exc), 1)


def _unavailable(env: runner.Env, exc: Exception) -> str:
    from runtimestate import database

    return f"cannot use the database at {database.redact(env.database_url)}: {exc}"


async def _follow(env: runner.Env, source: Source, screen: Screen) -> int:
    from runtimestate import database, errors

    engine = database.create_async_engine(env.database_url)
    sessions = database.session_factory(engine)
    changed = asyncio.Event()
    connection: natsconnection.Connection | None = None
    try:
        connection = await _subscribe(env, source, changed, screen)  # first: miss no change
        docs = await database.read_snapshot(sessions, source.read)
        screen.show(docs)
        key = change_key(docs, source.volatile)
        while True:
            await _cue(connection, changed)
            docs = await database.read_snapshot(sessions, source.read)
            if (new_key := change_key(docs, source.volatile)) != key:
                screen.show(docs)
                key = new_key
    except errors.DatabaseUnavailable as exc:
        env.error(_unavailable(env, exc))
        return 1
    finally:
        if connection is not None:
            await connection.close()
        await engine.dispose()


async def _cue(connection: natsconnection.Connection | None, changed: asyncio.Event) -> None:
    """Return when it is time to read again: a poll interval, or (with NATS) a message, but no
    sooner than `MIN_REDRAW_S` after the last read."""
    if connection is None:
        await asyncio.sleep(POLL_S)
        return
    await asyncio.sleep(MIN_REDRAW_S)
    await changed.wait()
    changed.clear()  # what arrives from now on is after the coming read began: it counts


async def _subscribe(
    env: runner.Env, source: Source, changed: asyncio.Event, screen: Screen
) -> natsconnection.Connection | None:
    """Subscribe to the list's subjects; None (said once) when the watch must poll instead."""
    from controller import datadir, natsconnection, trigger

    def note(text: str) -> None:
        env.err.print(text, markup=False, highlight=False)
        screen.noted()

    data_dir = datadir.from_environment(env.environ)
    found = await asyncio.to_thread(trigger.target, env.nats_url, env.nats_auth, data_dir)
    polling = f"polling the database every {POLL_S:g}s"
    if found is None:
        note(
            "note: no NATS to follow (--nats-url, LLMCTL_NATS_URL, or a llmctl serve on this "
            f"machine); {polling}"
        )
        return None
    url = found.url
    connection = natsconnection.Connection(note, found.discovered_in, found.auth)
    problem = await connection.open(url, CONNECT_S)
    if problem is not None and connection.refused and found.discovered_in is None:
        env.fail(problem, 1)  # the configured credentials or TLS: the user must fix them
    if problem is not None:
        why = problem if connection.refused else f"cannot reach NATS at {url} ({connection.reason})"
        note(f"note: {why}; {polling}")
        return None

    async def on_message(_: Msg) -> None:
        changed.set()

    async def on_reconnected() -> None:
        changed.set()  # events were missed while away: read again

    try:
        for subject in source.subjects:
            await connection.nc.subscribe(f"{env.prefix}.{subject}", cb=on_message)
        await connection.nc.flush(timeout=int(CONNECT_S))  # the server has them: none is missed
    except natsconnection.NATS_ERRORS as exc:
        with contextlib.suppress(*natsconnection.NATS_ERRORS):
            await connection.close()
        note(f"note: cannot subscribe on NATS at {url} ({exc}); {polling}")
        return None
    connection.on_reconnected = on_reconnected
    return connection
