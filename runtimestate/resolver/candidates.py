"""The candidate index: every (backend, model) of one snapshot, grouped the way requests ask.

Built by `runtimestate.resolver` once per snapshot (the snapshot is immutable, so the index is too)
and consulted on every request: a dict lookup gives the candidates of a model name, already split by
health and capability and sorted by context length, so a minimum context is a bisect. Each tier is
also stored as columns (parallel tuples of backends, keys and warm_first tiers, and the sticky
seeds packed in one integer), so the policies in `runtimestate.resolver.policies` score a prefix
with C-level calls instead of a Python loop per candidate. Every candidate of an index has an
ordinal (its position in `Index.all`), and each column set carries an ``itemgetter`` of its
candidates' ordinals: the signals that change per request (in-flight counts, latencies, error
rates) are kept by `runtimestate.resolver.signals.LoadBook` in lists by ordinal, and a column set
reads its own in one C call. Pure: no I/O, no clock.

Model names compare by `runtimestate.desired.names.key`: Ollama names canonically
(``llama3`` is ``llama3:latest``), every other backend type's served names exactly.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from runtimestate import snapshot
from runtimestate.desired import names, selectors

Phase = snapshot.Phase
ProviderKey = str  # "<backend>/<model>": backend names are DNS labels, so the first "/" splits

COLD_LOAD = 1.0  # an Ollama model that is not loaded costs about one request's worth of wait
COLD_TIER = 1e12  # warm_first: puts every cold candidate after every warm one
_MAX_CACHED_NAMES = 4096  # requested names the index remembers; garbage names cannot grow it

T = TypeVar("T")
Gather = Callable[[Sequence[T]], Sequence[T]]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One (backend, model) pair of the snapshot, with what filters and policies read."""

    backend: str
    backend_id: int
    type: str
    base_url: str
    model: str
    context_length: int | None
    capabilities: frozenset[str]
    loaded: bool
    phase: Phase
    static_load: float  # vLLM running + waiting, or the cold-start cost of an unloaded model
    seed: int  # the provider's rendezvous-hash seed, stable across processes
    key: ProviderKey
    warm: bool  # a request starts without loading the model (only Ollama loads on demand)


@dataclasses.dataclass(frozen=True, slots=True)
class Absence:
    """A backend that lacks a requested model (only computed for explanations)."""

    backend: str
    phase: Phase
    declared: bool
    adapter: bool = False  # a LoRA adapter placed there, not loaded (issue 16)


@functools.lru_cache(maxsize=65536)  # session keys repeat; hashing one costs a microsecond
def stable_hash(text: str) -> int:
    """A 64-bit hash equal in every process (Python's ``hash`` of a str is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _capabilities(model: snapshot.PulledModel) -> frozenset[str]:
    flags = (
        ("chat", model.can_chat),
        ("embed", model.can_embed),
        ("prompt", model.can_prompt),
        ("stream", model.can_stream),
    )
    return frozenset(name for name, present in flags if present)


def candidates_of(state: snapshot.LLMState) -> tuple[Candidate, ...]:
    """Every model a backend reports, as candidates (its declared-only models are not).

    A model's own `base_url` wins over its backend's; on a node agent only models with one (a
    ready instance) are candidates: the agent itself serves no model, cached weights are not
    a server."""
    vllm_load = (state.load.running or 0.0) + (state.load.waiting or 0.0)
    result = []
    for model in state.serving:
        warm = model.loaded or state.type != names.OLLAMA
        key = f"{state.name}/{model.name}"
        result.append(
            Candidate(
                backend=state.name,
                backend_id=state.id,
                type=state.type,
                base_url=model.base_url or state.base_url,
                model=model.name,
                context_length=model.context_length,
                capabilities=_capabilities(model),
                loaded=model.loaded,
                phase=state.phase,
                static_load=vllm_load + (0.0 if warm else COLD_LOAD),
                seed=stable_hash(key),
                key=key,
                warm=warm,
            )
        )
    return tuple(result)


def gather(positions: Sequence[int]) -> Gather[T]:
    """A function taking ``values[i] for i in positions`` as a tuple, in one C call."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        only = positions[0]
        return lambda values: (values[only],)
    return lambda values: ()


SLOT_BITS = 128  # room for a 64-bit seed times a 64-bit session key, with no carry out


def packed_seeds(seeds: Sequence[int]) -> int:
    """Seeds (64-bit, forced odd) as one integer, the i-th in bits ``128 i`` up: multiplied
    by a session hash in one C call, each slot holds that seed times the session alone."""
    slot = SLOT_BITS // 8
    return int.from_bytes(b"".join((seed | 1).to_bytes(slot, "little") for seed in seeds), "little")


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Columns:
    """Candidates and the fields policies score, as parallel tuples (any prefix stays aligned)."""

    items: tuple[Candidate, ...]
    backends: tuple[str, ...]
    keys: tuple[ProviderKey, ...]
    cold_tier: tuple[float, ...]  # warm_first: 0.0 when warm, COLD_TIER when cold
    seeds: int  # sticky: every candidate's seed in a 128-bit slot of its own (`packed_seeds`)
    position: dict[ProviderKey, int]  # where each key is, to mask cooling-down providers
    by_ordinal: Gather[float]  # values by candidate ordinal -> values by column position

    @classmethod
    def of(cls, items: Sequence[Candidate], ordinals: Ordinals) -> Columns:
        return cls(
            tuple(items),
            tuple(c.backend for c in items),
            tuple(c.key for c in items),
            tuple(0.0 if c.warm else COLD_TIER for c in items),
            packed_seeds([c.seed for c in items]),
            {c.key: i for i, c in enumerate(items)},
            gather([ordinals.of_key[c.key] for c in items]),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Ordinals:
    """The ordinal of each candidate of an index (its position in `Index.all`), by key; and
    each backend's span of ordinals (``start, stop``: `Index.all` lists each backend's
    candidates together)."""

    of_key: Mapping[ProviderKey, int]
    of_backend: Mapping[str, tuple[int, int]]

    @classmethod
    def of(cls, everything: Sequence[Candidate]) -> Ordinals:
        of_backend: dict[str, tuple[int, int]] = {}
        for i, c in enumerate(everything):
            start, _ = of_backend.get(c.backend, (i, i))
            assert _ == i, f"the candidates of {c.backend} are not listed together"
            of_backend[c.backend] = (start, i + 1)
        return cls({c.key: i for i, c in enumerate(everything)}, of_backend)

    def __len__(self) -> int:
        return len(self.of_key)


# (model name, capability, types, selector)
PoolKey = tuple[str | None, str | None, frozenset[str], selectors.Selector]
NO_LABELS: Mapping[str, str] = {}


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Pool:
    """The candidates of one (model name, capability): ready and degraded, by context desc."""

    key: PoolKey  # what requests asked for: round-robin turns outlive the index under it
    ready: Columns
    degraded: Columns
    ready_contexts: tuple[int, ...]  # negated context lengths, ascending, for bisect
    degraded_contexts: tuple[int, ...]
    keys: frozenset[ProviderKey]  # to skip the cooldown filter when none of them is blocked


def _by_context(items: list[Candidate], ordinals: Ordinals) -> tuple[Columns, tuple[int, ...]]:
    items.sort(key=lambda c: (-(c.context_length or 0), c.backend, c.model))
    return Columns.of(items, ordinals), tuple(-(c.context_length or 0) for c in items)


def at_least(contexts: tuple[int, ...], min_context: int | None) -> int:
    """How many of a tier's candidates (sorted by context, desc) have ``min_context`` tokens."""
    if not min_context:
        return len(contexts)
    return bisect.bisect_right(contexts, -min_context)


class Index:
    """Every candidate of one snapshot, grouped by the names requests use. Immutable in effect.

    Groups and pools are built on first use and cached (bounded), so building an index costs
    one pass over the snapshot and the first request for a name one pass over its candidates.
    """

    def __init__(
        self,
        snap: snapshot.Snapshot,
        per_backend: Callable[[snapshot.LLMState], Sequence[Candidate]],
    ) -> None:
        self.snapshot = snap
        self.backends = snap.backends
        self._ollama: dict[names.ModelKey, list[Candidate]] = {}
        self._exact: dict[str, list[Candidate]] = {}
        everything: list[Candidate] = []
        for state in snap.backends.values():
            for candidate in per_backend(state):
                everything.append(candidate)
                if candidate.type == names.OLLAMA:
                    key = names.key(candidate.model, names.OLLAMA)
                    self._ollama.setdefault(key, []).append(candidate)
                else:
                    self._exact.setdefault(candidate.model, []).append(candidate)
        self.all: tuple[Candidate, ...] = tuple(everything)
        self.ordinals = Ordinals.of(everything)
        self._groups: dict[str | None, tuple[Candidate, ...]] = {None: self.all}
        self._pools: dict[PoolKey, Pool] = {}
        # Backend labels, for selectors: they are spec, not status, so they come from the
        # desired state (`relabel`), and `labelled_by` is the one they came from.
        self.labels: Mapping[str, Mapping[str, str]] = {}
        self.labelled_by: object = None

    def relabel(self, source: object, labels: Mapping[str, Mapping[str, str]]) -> None:
        """Take the backends' labels from ``source``; pools cut by a selector are rebuilt."""
        self.labelled_by, self.labels = source, labels
        self._pools = {key: pool for key, pool in self._pools.items() if not key[3]}

    def labels_of(self, backend: str) -> Mapping[str, str]:
        return self.labels.get(backend, NO_LABELS)

    def refresh(self, snap: snapshot.Snapshot) -> None:
        """Point at a newer snapshot whose candidates are the very same objects."""
        self.snapshot = snap
        self.backends = snap.backends

    def group(self, name: str | None) -> tuple[Candidate, ...]:
        """Every candidate serving ``name`` (None: every candidate), whatever its health."""
        found = self._groups.get(name)
        if found is None:
            assert name is not None
            ollama = self._ollama.get(names.key(name, names.OLLAMA), [])
            found = tuple(ollama) + tuple(self._exact.get(name, ()))
            if len(self._groups) >= _MAX_CACHED_NAMES:
                self._groups = {None: self.all}
                self._pools.clear()
            self._groups[name] = found
        return found

    def pool(
        self,
        name: str | None,
        capability: str | None,
        types: frozenset[str] = frozenset(),
        selector: selectors.Selector = selectors.EVERYTHING,
    ) -> Pool:
        """The routable candidates of ``name`` with ``capability`` on backends of ``types``
        (empty: any) whose labels match ``selector``, sorted for bisect."""
        key = (name, capability, types, selector)
        found = self._pools.get(key)
        if found is None:
            ready: list[Candidate] = []
            degraded: list[Candidate] = []
            for c in self.group(name):
                if capability is not None and capability not in c.capabilities:
                    continue
                if types and c.type not in types:
                    continue
                if selector and not selector.matches(self.labels_of(c.backend)):
                    continue
                if c.phase is Phase.READY:
                    ready.append(c)
                elif c.phase is Phase.DEGRADED:
                    degraded.append(c)
            keys = frozenset(c.key for c in (*ready, *degraded))
            ready_columns, ready_contexts = _by_context(ready, self.ordinals)
            degraded_columns, degraded_contexts = _by_context(degraded, self.ordinals)
            found = Pool(
                key, ready_columns, degraded_columns, ready_contexts, degraded_contexts, keys
            )
            if len(self._pools) >= _MAX_CACHED_NAMES:
                self._pools.clear()
            self._pools[key] = found
        return found

    def absences(self, name: str) -> list[Absence]:
        """The backends that do not serve ``name``, for explanations."""
        serving = {c.backend for c in self.group(name)}
        result = []
        for backend, state in sorted(self.backends.items()):
            if backend in serving:
                continue
            key = names.key(name, state.type)
            placed = name in state.adapters
            declared = placed or any(names.key(m, state.type) == key for m in state.models)
            result.append(Absence(backend, state.phase, declared, placed))
        return result
