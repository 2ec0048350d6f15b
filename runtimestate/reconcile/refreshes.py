"""Status refreshes: a backend's status brought up to date when a download on it ends.

`State` builds one `Refreshes` around `cycle.BackendCycle.refresh` and hands `request` to the
download worker, which calls it when a pull succeeded, failed or was cancelled. A request
returns at once (the download's task never waits on the refresh, which waits for a running
backend cycle); one task per backend runs the refreshes, and requests that arrive while it
runs make it run once more after, so the last download to end is always seen and a burst of
endings on one backend costs at most two observations of it.

It must not observe anything itself, nor let a failing refresh escape: a failure is logged and
the next backend cycle catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Refreshes:
    """Refresh requests per backend name; one event loop owns it."""

    def __init__(self, refresh: Callable[[str], Awaitable[object]]) -> None:
        self._refresh = refresh
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def request(self, backend: str) -> None:
        """Refresh ``backend``'s status soon; returns at once. Idempotent while pending."""
        if backend in self._tasks:
            self._again.add(backend)
            return
        self._tasks[backend] = asyncio.get_running_loop().create_task(self._run(backend))

    async def _run(self, backend: str) -> None:
        try:
            while True:
                self._again.discard(backend)
                try:
                    await self._refresh(backend)
                except Exception:  # unexpected: logged with its traceback; the cycle catches up
                    log.exception("status refresh failed", backend=backend)
                if backend not in self._again:
                    return
        finally:  # in the same step as the check above: no request can fall in between
            if self._tasks.get(backend) is asyncio.current_task():
                del self._tasks[backend]

    async def drain(self) -> None:
        """Wait until no refresh is pending or running."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    async def aclose(self) -> None:
        """Cancel pending and running refreshes and wait for them to stop."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._again.clear()
