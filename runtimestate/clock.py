"""The clock: where the backend cycle and the download worker read the time and wait.

`State` takes one (``SYSTEM`` unless a test passes a `FakeClock`) and hands it to the backend
cycle and the download worker, which read every instant their decisions depend on from it: the
grace period and the probe backoff, ``last_ok_at`` and the status timestamps, the leases'
expiries, the heartbeat interval and the retry delays of a write the database refused. Pure code
(the planner, `reconcile.probing`) takes instants as values and never reads a clock. The
deadlines of real I/O (an HTTP call's timeout, the cycle's observation deadline) stay on the event
loop's own clock: a fake clock must not make a hung node look fast.

`FakeClock` stands still until a test moves it with `advance`, which wakes the tasks sleeping on
it whose time has come; nothing here sleeps in real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """The time as the cycles see it: a UTC wall clock, a monotonic one, and a way to wait."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (a cancellation interrupts it)."""
        ...


class SystemClock:
    """The real time: `datetime.now` in UTC, `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM: Clock = SystemClock()


@dataclasses.dataclass(order=True)
class _Sleeper:
    wakes_at: float
    order: int
    future: asyncio.Future[None] = dataclasses.field(compare=False)


class FakeClock:
    """A clock for tests: it moves only when `advance` is called.

    It starts at ``start`` (by default the real time at its creation, so rows that other code
    stamps with the real time stay comparable with its instants). ``sleep`` returns once the
    clock has been advanced past the sleeper's wake time (``sleep(0)`` just yields).
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime.now(dt.UTC)
        if start.tzinfo is None:
            raise ValueError("a FakeClock needs a timezone-aware start")
        self._start = start
        self._elapsed = 0.0
        self._sleepers: list[_Sleeper] = []
        self._order = itertools.count()

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, _Sleeper(self._elapsed + seconds, next(self._order), future))
        await future

    @property
    def sleeping(self) -> int:
        """How many tasks wait on this clock."""
        return sum(not s.future.done() for s in self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward and wake every sleeper whose time has come (they
        run at the event loop's next turns)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0].wakes_at <= self._elapsed:
            woken = heapq.heappop(self._sleepers).future
            if not woken.done():  # a cancelled sleep left its future behind
                woken.set_result(None)
