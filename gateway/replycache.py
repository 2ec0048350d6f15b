"""The gateway's exact-match cache of replies to deterministic, non-streamed requests.

`ReplyCache.consult` is called by `application` for each admitted request, with its endpoint,
its JSON document, the key's scope (`access.Grant.scope`) and its ``Cache-Control`` header, and
returns a `Lookup`: a hit (the stored reply, sent as is: no provider is called and it costs
nothing), a miss (forward it, keep the reply up to ``max_entry_bytes``, then `ReplyCache.keep`
stores it when it is whole and a success), or nothing to do. Pure apart from the clock it is
given; no I/O, no aiohttp, nothing logged (entries hold users' prompts' answers).

The key is a SHA-256 of the scope, the endpoint and the canonical JSON of the *whole* request
document (sorted keys, no whitespace), so any difference at all is a miss, never a wrong hit:
``model``, ``messages``/``prompt``/``input``, every parameter. That includes ``n`` (the number
of choices is part of the reply), ``logprobs``/``top_logprobs`` (they are in the reply),
``tools``/``tool_choice``/``response_format`` (they change the reply) and ``user`` (one end
user's entries are not served to another's: conservative, at the cost of fewer hits). The
scope is the key's own (``key:<id>``: one key never sees another's entries) unless the operator
shares the cache across keys (``shared``); keys are admitted before the cache is consulted, so a
shared entry only reaches a key allowed to use its model.

What is cached (`deterministic`): embeddings always (an embedding model has no sampling);
chat and completions only when not streamed, and ``temperature`` is 0 or a ``seed`` is given
(greedy decoding, or sampling its provider repeats for the seed). Temperature absent means 1
(sampled), so it is not cached. A request with ``store: true`` asks its provider to keep the
completion, a side effect a hit would skip, so it is not cached either. A streamed request is
never cached (its reply is events, relayed as they come). The request may opt out as HTTP
caches read ``Cache-Control``: ``no-cache`` is not answered from the cache but its fresh reply
is stored; ``no-store`` neither reads nor stores.

Bounded in memory by bytes (each entry's body and key plus a fixed overhead), least recently
used evicted first; an entry expires ``ttl_s`` after it was stored (a hit does not extend it),
so a model redeployed under the same name is seen within the TTL. Only whole 200 replies that
are JSON objects without an ``error`` are stored, and only up to ``max_entry_bytes``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

HIT, MISS = "hit", "miss"  # `exchange.Exchange.cache` and the ``X-Llmctl-Cache`` header
SHARED_SCOPE = "shared"
MiB = 1024 * 1024
ENTRY_OVERHEAD_BYTES = 200  # the dict slot, the tuple and the bytes objects' headers
_EMBEDDINGS = "embeddings"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The cache's knobs (``llmctl gateway --cache-...``); ``ttl_s`` 0 turns it off."""

    ttl_s: float = 300.0
    max_bytes: int = 64 * MiB
    max_entry_bytes: int = 1 * MiB
    shared: bool = False

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_bytes > 0 and self.max_entry_bytes > 0


OFF = Settings(ttl_s=0)


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    """What the cache says of one request: ``state`` is `HIT`, `MISS` or "" (not cacheable);
    ``body`` the stored reply on a hit; ``key`` where a miss's reply goes (None: nowhere)."""

    state: str = ""
    key: bytes | None = None
    body: bytes | None = None
    keep_reply: int = 0  # bytes of the reply relaying should keep (`exchange.Exchange`)


NOT_CACHED = Lookup()


@dataclasses.dataclass(slots=True)
class Counts:
    """What the cache did since it started (for metrics)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0  # dropped for room
    expired: int = 0  # found past their TTL
    too_large: int = 0  # replies over ``max_entry_bytes``, not stored


def deterministic(endpoint: str, document: Mapping[str, Any]) -> bool:
    """Whether a request to ``endpoint`` (``chat/completions``, ``completions``,
    ``embeddings``) with ``document`` always gets the same reply (see the module docstring)."""
    if endpoint == _EMBEDDINGS:
        return True
    if document.get("stream") is True or document.get("store") is True:
        return False
    seed = document.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return True
    temperature = document.get("temperature")
    return _number(temperature) and temperature == 0


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def directives(cache_control: str) -> tuple[bool, bool]:
    """Whether a request's ``Cache-Control`` lets it (read, store) the cache."""
    names = {part.split("=", 1)[0].strip().lower() for part in cache_control.split(",")}
    if "no-store" in names:
        return False, False
    return "no-cache" not in names, True


def entry_key(endpoint: str, document: Mapping[str, Any], scope: str) -> bytes:
    """The digest naming a request's entry: its scope, endpoint and canonical document."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{scope}\n{endpoint}\n".encode())
    digest.update(canonical.encode("utf-8", "surrogatepass"))
    return digest.digest()


def storable(reply: bytes) -> bool:
    """Whether a 200 reply's body is a whole JSON object that is not an error."""
    try:
        document = json.loads(reply)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and "error" not in document


class ReplyCache:
    """Replies by entry key, least recently used first, each with the time it expires."""

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.counts = Counts()
        self._clock = clock
        self._entries: collections.OrderedDict[bytes, tuple[float, bytes]] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The bytes the entries are counted as (never over ``max_bytes``)."""
        return self._bytes

    def consult(
        self, endpoint: str, document: Mapping[str, Any], scope: str, cache_control: str = ""
    ) -> Lookup:
        """The cache's answer for one admitted request; counts a hit or a miss."""
        settings = self.settings
        if not settings.enabled or not deterministic(endpoint, document):
            return NOT_CACHED
        read, store = directives(cache_control)
        if not store:
            return NOT_CACHED
        key = entry_key(endpoint, document, SHARED_SCOPE if settings.shared else scope)
        body = self.get(key) if read else None
        if body is not None:
            self.counts.hits += 1
            return Lookup(HIT, key, body)
        self.counts.misses += 1
        return Lookup(MISS, key, None, settings.max_entry_bytes)

    def keep(self, lookup: Lookup, status: int, reply: bytes | None) -> bool:
        """Store a miss's reply when it is a whole success; returns whether it was stored."""
        if lookup.state != MISS or lookup.key is None or status != 200 or reply is None:
            return False
        if not storable(reply):
            return False
        return self.put(lookup.key, reply)

    def get(self, key: bytes) -> bytes | None:
        """The reply stored under ``key`` unless it expired (then it is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, body = entry
        if self._clock() >= expires:
            self._drop(key)
            self.counts.expired += 1
            return None
        self._entries.move_to_end(key)
        return body

    def put(self, key: bytes, body: bytes) -> bool:
        """Store ``body`` for ``ttl_s``, evicting the least recently used entries for room;
        a body over ``max_entry_bytes`` is not stored (returns False)."""
        if len(body) > self.settings.max_entry_bytes:
            self.counts.too_large += 1
            return False
        cost = _cost(key, body)
        if cost > self.settings.max_bytes:
            self.counts.too_large += 1
            return False
        if key in self._entries:
            self._drop(key)
        while self._bytes + cost > self.settings.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.counts.evictions += 1
        self._entries[key] = (self._clock() + self.settings.ttl_s, body)
        self._bytes += cost
        self.counts.stores += 1
        return True

    def _drop(self, key: bytes) -> None:
        _, body = self._entries.pop(key)
        self._bytes -= _cost(key, body)


def _cost(key: bytes, body: bytes) -> int:
    return len(key) + len(body) + ENTRY_OVERHEAD_BYTES
