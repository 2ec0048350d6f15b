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
import pathlib
from typing import Annotated

import typer

from controller import datadir, runner, trigger
from dwqueue import events, natsauth
from runtimestate.desired import names

# The following itself (`controller.watchfeed`: NATS, the database) and the bars
# (`controller.watchview`: rich) are imported when the watch starts, not for ``--help``.


# --- the command -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    nats_url: str
    discovered_in: pathlib.Path | None  # the data directory the URL came from, if it did
    prefix: str
    backend: str | None
    exit_when_idle: bool
    timeout_s: float | None
    auth: natsauth.NatsAuth = dataclasses.field(default_factory=natsauth.NatsAuth)


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
    data_dir = datadir.from_environment(env.environ)
    found = trigger.target(env.nats_url, env.nats_auth, data_dir)
    if found is None:
        env.fail(
            "watch reads download events from NATS: give the server as "
            "llmctl --nats-url nats://HOST:4222 watch, or set LLMCTL_NATS_URL; with neither, "
            f"it uses the embedded NATS of a llmctl serve running on this machine (none "
            f"announced in {data_dir}, the data directory; LLMCTL_DATA_DIR sets it)"
        )
    _check_filter(env, backend)
    if timeout is not None and not math.isfinite(timeout):
        env.fail(f"--timeout must be a finite number of seconds, not {timeout}")
    options = Options(
        found.url, found.discovered_in, env.prefix, backend, exit_when_idle, timeout, found.auth
    )
    from controller import watchfeed, watchview

    sink: watchview.Sink = (
        watchview.JsonLines()
        if json_lines
        else watchview.Bars(env.out, dt.datetime.now(dt.UTC), env.err)
    )
    runner.until_stopped(lambda: asyncio.run(watchfeed.follow(env, options, sink)))


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
