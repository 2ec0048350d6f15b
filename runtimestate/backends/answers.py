"""Answers worth keeping a while: sizes asked of a registry or a node agent, cached with a TTL.

`Answers.lookup(keys, ask)` returns the known answers to ``keys``, asking (concurrently) only
those it has no fresh answer for, at most `per_lookup` of them per call (the rest wait for a
later call, unknown meanwhile), and waiting `deadline_s` at most: what has not answered by then
is a failure. An answer is kept `ttl_s`; a failure (``ask`` returned None, or ran late) for
`failure_ttl_s`, so a registry or agent that is down is not asked every cycle.

Used by `runtimestate.backends.registry` (Ollama manifests) and
`runtimestate.reconcile.agentsizes` (node agents) for the cycle's admission lookup. Reads
`clock.monotonic` only; asks nothing itself but through ``ask``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Generic, TypeVar

from runtimestate import clock as clocks

K = TypeVar("K")


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    value: int | None  # None: no answer
    until: float  # the monotonic instant it expires


class Answers(Generic[K]):
    """Cached integer answers by key. One event loop uses it (no locking)."""

    def __init__(
        self,
        *,
        ttl_s: float,
        failure_ttl_s: float,
        per_lookup: int,
        deadline_s: float,
        clock: clocks.Clock = clocks.SYSTEM,
    ) -> None:
        self._ttl_s, self._failure_ttl_s = ttl_s, failure_ttl_s
        self._per_lookup, self._deadline_s = per_lookup, deadline_s
        self._clock = clock
        self._cache: dict[K, _Answer] = {}

    async def lookup(
        self, keys: Iterable[K], ask: Callable[[K], Awaitable[int | None]]
    ) -> Mapping[K, int]:
        """The known answers to ``keys``; those without one are left out."""
        now = self._clock.monotonic()
        wanted = list(dict.fromkeys(keys))
        due = [k for k in wanted if (a := self._cache.get(k)) is None or a.until <= now]
        due = due[: self._per_lookup]
        tasks = [asyncio.ensure_future(ask(k)) for k in due]
        if tasks:  # what does not answer holds the caller up `deadline_s` at most
            _, late = await asyncio.wait(tasks, timeout=self._deadline_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for key, task in zip(due, tasks, strict=True):
            value = None if task.cancelled() else task.result()
            ttl = self._ttl_s if value is not None else self._failure_ttl_s
            self._cache[key] = _Answer(value, self._clock.monotonic() + ttl)
        found = {k: self._cache[k].value for k in wanted if k in self._cache}
        return {k: value for k, value in found.items() if value is not None}

    def retain(self, keep: Callable[[K], bool]) -> None:
        """Forget the answers whose key ``keep`` refuses."""
        for key in [k for k in self._cache if not keep(k)]:
            del self._cache[key]
