"""The pulls in flight on one agent, shared by the clients that wait for them.

`nodeagent.api`'s pull route calls `Pulls.join(source, revision)` for each request and
`Pulls.leave(waiter)` when its client has the outcome or went away (`requested` reads what a
request asks for). Clients asking for the same
source and revision while it runs share one `Cache.pull`: a late one first gets the latest
progress, then every later value, and the same outcome. When the last waiter leaves before the
pull ends, the pull is stopped (its flag is set: `nodeagent.cancellation`), which is how the
controller cancels a download: it closes the stream. A stopped pull is never joined again; the
next request starts a new one, which skips the files already cached.

Runs on the agent's event loop only; must not block it nor touch the cache itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from typing import Any

from aiohttp import web

from nodeagent import progress, weights

_Key = tuple[str, str | None]
_FIELDS = {"source", "revision"}


class BadRequest(ValueError):
    """A pull request's body that is not ``{"source", "revision"}``; the message says why."""


async def requested(request: web.Request, example: str) -> tuple[str, str | None]:
    """`(source, revision)` of a body asking for a pull (the weights route, an instance's
    adapter route); raises BadRequest naming what is wrong, with ``example``."""
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(f"the body is not JSON: {example}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body is not a JSON object: {example}")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}: {example}")
    source, revision = body.get("source"), body.get("revision")
    if not isinstance(source, str) or not (revision is None or isinstance(revision, str)):
        raise BadRequest(f"source must be a string, revision a string or absent: {example}")
    return source, revision


class Waiter:
    """One client's view of a shared pull: its progress values and the pull itself."""

    def __init__(self, task: asyncio.Future[weights.Weights]) -> None:
        self.task = task
        self.updates: asyncio.Queue[progress.Progress] = asyncio.Queue()


@dataclasses.dataclass(eq=False)
class _Shared:
    stop: threading.Event
    waiters: set[Waiter] = dataclasses.field(default_factory=set)
    latest: progress.Progress | None = None
    task: asyncio.Future[weights.Weights] | None = None

    def publish(self, value: progress.Progress) -> None:
        self.latest = value
        for waiter in self.waiters:
            waiter.updates.put_nowait(value)


class Pulls:
    """Shared pulls of `cache`, keyed by source and revision as asked."""

    def __init__(self, cache: weights.Cache) -> None:
        self._cache = cache
        self._running: dict[_Key, _Shared] = {}

    def join(self, source: str, revision: str | None) -> Waiter:
        """Wait for `source` at `revision`: the pull running for it, else a new one."""
        key = (source, revision)
        shared = self._running.get(key)
        if shared is None or shared.stop.is_set():
            shared = self._start(key)
        assert shared.task is not None
        waiter = Waiter(shared.task)
        shared.waiters.add(waiter)
        if shared.latest is not None:
            waiter.updates.put_nowait(shared.latest)
        return waiter

    def leave(self, waiter: Waiter) -> None:
        """`waiter` stops waiting; the last one to leave a pull still running stops it."""
        for shared in self._running.values():
            if waiter in shared.waiters:
                shared.waiters.discard(waiter)
                if not shared.waiters and not waiter.task.done():
                    shared.stop.set()
                return

    def _start(self, key: _Key) -> _Shared:
        shared = _Shared(stop=threading.Event())
        pulled = self._cache.pull(key[0], key[1], on_progress=shared.publish, stop=shared.stop)
        task = asyncio.ensure_future(pulled)
        shared.task = task
        self._running[key] = shared

        def ended(_: asyncio.Future[weights.Weights]) -> None:
            if self._running.get(key) is shared:
                del self._running[key]
            with contextlib.suppress(asyncio.CancelledError):
                task.exception()  # retrieved: a pull nobody waits for fails quietly

        task.add_done_callback(ended)
        return shared
