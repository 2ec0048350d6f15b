"""A bounded cache of Ollama `/api/show` facts keyed by (backend, manifest digest).

A digest names immutable content, so what `/api/show` says about it (context length,
capabilities) never changes; observing a node therefore costs one `/api/show` per new digest,
not one per model per cycle. Several adapters (for instance one per cycle) may share one cache.

Who calls it: `runtimestate.backends.ollama`. Pure in-memory state: no I/O, no clock. It is
not thread-safe, and needs not be: one event loop uses it.
"""

from __future__ import annotations

import collections
import dataclasses

DEFAULT_MAX_ENTRIES = 8192


@dataclasses.dataclass(frozen=True)
class ShowFacts:
    context_length: int | None
    backend_capabilities: frozenset[str]


class ShowCache:
    """Least-recently-used map from (backend, digest) to `ShowFacts`."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._entries: collections.OrderedDict[tuple[str, str], ShowFacts] = (
            collections.OrderedDict()
        )
        self._max = max_entries
        # Every node of a fleet reports the same few facts: share one object per value, so a
        # full cache costs about its keys, not a frozenset per entry.
        self._interned: dict[ShowFacts, ShowFacts] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, backend: str, digest: str) -> ShowFacts | None:
        key = (backend, digest)
        facts = self._entries.get(key)
        if facts is not None:
            self._entries.move_to_end(key)
        return facts

    def put(self, backend: str, digest: str, facts: ShowFacts) -> None:
        facts = self._interned.setdefault(facts, facts)
        self._entries[(backend, digest)] = facts
        self._entries.move_to_end((backend, digest))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
