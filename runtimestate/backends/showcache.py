"""A bounded cache of Ollama `/api/show` facts keyed by manifest digest, shared by a fleet.

A digest names immutable content, so what `/api/show` says about it (context length,
capabilities) is the same on every node that has it and never changes: observing a fleet costs
one `/api/show` per new digest, not one per model per node. A fetch under way is announced
(`start`) so other nodes wait for its answer (`pending`); only facts are shared, never a
failure: a waiter whose fetch failed or found nothing asks its own node.

Who calls it: `runtimestate.backends.ollama`; `runtimestate.backends.adapters.AdapterPool` owns
the one cache its adapters share. In-memory state only: no I/O, no clock; one event loop uses it
(not thread-safe).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses

DEFAULT_MAX_ENTRIES = 8192


@dataclasses.dataclass(frozen=True)
class ShowFacts:
    context_length: int | None
    backend_capabilities: frozenset[str]


class ShowCache:
    """Least-recently-used map from digest to `ShowFacts`, plus the fetches under way."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._entries: collections.OrderedDict[str, ShowFacts] = collections.OrderedDict()
        self._max = max_entries
        # Models of a fleet report the same few facts: share one object per value.
        self._interned: dict[ShowFacts, ShowFacts] = {}
        self._pending: dict[str, asyncio.Future[ShowFacts | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> ShowFacts | None:
        facts = self._entries.get(digest)
        if facts is not None:
            self._entries.move_to_end(digest)
        return facts

    def put(self, digest: str, facts: ShowFacts) -> None:
        facts = self._interned.setdefault(facts, facts)
        self._entries[digest] = facts
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def pending(self, digest: str) -> asyncio.Future[ShowFacts | None] | None:
        """The answer of a fetch of ``digest`` another caller has under way, or None."""
        return self._pending.get(digest)

    def start(self, digest: str) -> None:
        """Announce that the caller fetches ``digest`` now; it must call `finish` (finally)."""
        self._pending[digest] = asyncio.get_running_loop().create_future()

    def finish(self, digest: str, facts: ShowFacts | None) -> None:
        """End the fetch `start` announced: cache ``facts`` and hand them to every waiter.

        None (the fetch failed, was cancelled, or the node no longer had the model) tells the
        waiters to ask their own nodes. Idempotent.
        """
        if facts is not None:
            self.put(digest, facts)
        future = self._pending.pop(digest, None)
        if future is not None and not future.done():
            future.set_result(self.get(digest) if facts is not None else None)
