"""The resolver's values: the request, the provider handed out, the resolution and the errors.

Made by `runtimestate.resolver` and read by applications and ``llmctl resolve``. A `Resolution`
keeps what the decision saw and computes its fallbacks and exclusions only when asked, so a
decision allocates a handful of small objects and copies nothing. Credentials are reachable only
through `Provider.credentials`, which returns a `credentials.Secret` (it never prints itself);
no ``repr``, ``str`` or JSON form here contains a key. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from typing import Any, Protocol

from runtimestate import credentials
from runtimestate.desired import spec
from runtimestate.resolver import candidates, cooldown, demand, policies


class Reason(enum.StrEnum):
    """Why a candidate was left out (the codes of ``--explain`` and the JSON output)."""

    MODEL_ABSENT = "model_absent"
    BACKEND_NOT_READY = "backend_not_ready"
    BACKEND_DEGRADED = "backend_degraded"
    TYPE_NOT_ALLOWED = "type_not_allowed"
    SELECTOR_MISMATCH = "selector_mismatch"
    CAPABILITY_MISSING = "capability_missing"
    CONTEXT_TOO_SMALL = "context_too_small"
    COOLING_DOWN = "cooling_down"


_HEALTHY = (candidates.Phase.READY, candidates.Phase.DEGRADED)


InvalidRequest = demand.InvalidRequest  # made in `demand`; the public names stay here
Request = demand.Request


class Provider:
    """A chosen (backend, model): where to send the request, and how to authenticate."""

    __slots__ = ("_keys", "candidate", "trial")

    def __init__(
        self,
        candidate: candidates.Candidate,
        keys: Callable[[str], credentials.Secret | None],
        trial: int | None = None,
    ) -> None:
        self.candidate = candidate
        self._keys = keys
        # When this is a cooling-down provider's one trial request: the token its outcome
        # must carry (`Resolver.record_outcome` passes it on) to close or re-open the breaker.
        self.trial = trial

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self.candidate.backend

    @property
    def backend_id(self) -> int:
        """The backend's id in the database."""
        return self.candidate.backend_id

    @property
    def type(self) -> str:
        """ollama, vllm, openai, gemini or node."""
        return self.candidate.type

    @property
    def base_url(self) -> str:
        """Where to send requests."""
        return self.candidate.base_url

    @property
    def model(self) -> str:
        """The model name as the backend serves it."""
        return self.candidate.model

    @property
    def context_length(self) -> int | None:
        """In tokens, when known."""
        return self.candidate.context_length

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory now (Ollama)."""
        return self.candidate.loaded

    @property
    def key(self) -> candidates.ProviderKey:
        """``<backend>/<model>``, the key outcomes are recorded under."""
        return self.candidate.key

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(sorted(self.candidate.capabilities))

    def credentials(self) -> credentials.Secret | None:
        """The backend's API key as a `Secret` (None: it has none), resolved now.

        A node agent's is None: its token opens the agent's own API (pulls, instances) and
        is never handed to an application; its instances take no key.
        Raises `credentials.CredentialError` when the key cannot be found or decrypted.
        """
        if self.candidate.type == spec.BackendType.NODE:
            return None
        return self._keys(self.candidate.backend)

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "backend": c.backend,
            "backendId": c.backend_id,
            "type": c.type,
            "baseUrl": c.base_url,
            "model": c.model,
            "contextLength": c.context_length,
            "capabilities": list(self.capabilities),
            "loaded": c.loaded,
            "phase": c.phase.value,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Provider) and other.candidate.key == self.candidate.key

    def __hash__(self) -> int:
        return hash(self.candidate.key)

    def __repr__(self) -> str:
        c = self.candidate
        return f"Provider(backend={c.backend!r}, model={c.model!r}, base_url={c.base_url!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class Exclusion:
    """A candidate that was not considered, and why (``reason`` is a stable code)."""

    backend: str
    model: str
    reason: Reason
    detail: str
    context_length: int | None = None
    retry_in_s: float | None = None
    declared: bool = False  # model_absent only: declared on the backend, not pulled yet

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "backend": self.backend,
            "model": self.model,
            "reason": self.reason.value,
            "detail": self.detail,
        }
        if self.context_length is not None:
            doc["contextLength"] = self.context_length
        if self.retry_in_s is not None:
            doc["retryInS"] = round(self.retry_in_s, 3)
        if self.reason is Reason.MODEL_ABSENT:
            doc["declared"] = self.declared
        return doc


class Owner(Protocol):
    """What a resolution asks of the resolver that made it."""

    outcomes: cooldown.Tracker

    def provider(self, candidate: candidates.Candidate, trial: int | None = None) -> Provider: ...

    def signals(self, pool: candidates.Pool | None, request: Request) -> policies.Signals: ...


class Resolution:
    """The choice, its fallbacks (computed on first access) and, on demand, the exclusions."""

    __slots__ = (
        "_chosen", "_columns", "_count", "_fallbacks", "_index", "_masked", "_now", "_owner",
        "_position", "_signals", "provider", "request", "trial",
    )  # fmt: skip

    def __init__(
        self,
        owner: Owner,
        index: candidates.Index,
        request: Request,
        columns: candidates.Columns,
        count: int,
        position: int,
        now: float,
        signals: policies.Signals,
        chosen: int,
        *,
        masked: Set[int] = policies.NO_MASK,
        trial: int | None = None,
    ) -> None:
        # ``columns[:count]`` is what qualified in the tier the choice came from, the
        # ``position``-th tier of `tiers`; later tiers are only read for the fallbacks.
        self._owner, self._index, self.request = owner, index, request
        self._columns, self._count, self._position = columns, count, position
        self._now, self._signals, self._masked = now, signals, masked
        self.provider = owner.provider(columns.items[chosen], trial)
        self._fallbacks: tuple[Provider, ...] | None = None
        self.trial = trial is not None  # the choice is a cooling-down provider's one trial
        self._chosen = chosen

    @property
    def fallbacks(self) -> tuple[Provider, ...]:
        """Every other qualifying provider, in the order to try them."""
        if self._fallbacks is None:
            policy, owner = self.request.policy, self._owner
            columns, count = self._columns, self._count
            rest = policies.order(
                policy, columns, count, self._chosen, self._signals, self._masked
            )[1:]
            for columns, count in list(tiers(self._index, self.request))[self._position + 1 :]:
                kept = qualifying(columns.items[:count], owner.outcomes, self._now)
                if kept:
                    signals = owner.signals(None, self.request)
                    cols = candidates.Columns.of(kept, self._index.ordinals)
                    chosen = policies.pick(policy, cols, len(kept), signals)
                    rest += policies.order(policy, cols, len(kept), chosen, signals)
            # Two requested names may denote one model (llama3, llama3:latest): list it once.
            seen = {self.provider.key}
            unique = []
            for c in rest:
                if c.key not in seen:
                    seen.add(c.key)
                    unique.append(c)
            self._fallbacks = tuple(owner.provider(c) for c in unique)
        return self._fallbacks

    def providers(self) -> Iterator[Provider]:
        """The choice, then the fallbacks."""
        yield self.provider
        yield from self.fallbacks

    @property
    def excluded(self) -> tuple[Exclusion, ...]:
        """Why every candidate that is neither the choice nor a fallback was left out."""
        return exclusions(
            self._index, self.request, self._owner.outcomes, self._now, self.provider.key
        )

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "provider": self.provider.to_dict(),
            "trial": self.trial,
            "fallbacks": [p.to_dict() for p in self.fallbacks],
        }
        if explain:
            doc["excluded"] = [e.to_dict() for e in self.excluded]
        return doc

    def __repr__(self) -> str:
        return f"Resolution(provider={self.provider!r}, trial={self.trial})"


def tiers(index: candidates.Index, request: Request) -> Iterator[tuple[candidates.Columns, int]]:
    """The tiers a request considers, in preference order, each with how many of its
    candidates are big enough (before the cooldown filter)."""
    for name in request.models or (None,):
        pool = index.pool(name, request.capability, request.types, request.selector)
        yield pool.ready, candidates.at_least(pool.ready_contexts, request.min_context)
        if request.allow_degraded:
            yield pool.degraded, candidates.at_least(pool.degraded_contexts, request.min_context)


def qualifying(
    items: Sequence[candidates.Candidate], outcomes: cooldown.Tracker, now: float
) -> list[candidates.Candidate]:
    """``items`` whose breaker is closed."""
    gate, closed = outcomes.gate, cooldown.Gate.CLOSED
    return [c for c in items if gate(c.key, now) is closed]


def _reason(
    c: candidates.Candidate,
    request: Request,
    outcomes: cooldown.Tracker,
    now: float,
    labels: Callable[[str], Mapping[str, str]],
) -> Exclusion | None:
    def out(reason: Reason, detail: str, retry: float | None = None) -> Exclusion:
        return Exclusion(c.backend, c.model, reason, detail, c.context_length, retry)

    if c.phase not in _HEALTHY:
        return out(Reason.BACKEND_NOT_READY, f"backend {c.backend} is {c.phase.value}")
    if c.phase is candidates.Phase.DEGRADED and not request.allow_degraded:
        return out(
            Reason.BACKEND_DEGRADED,
            f"backend {c.backend} is Degraded (serving its last good list); "
            "allow degraded backends to use it",
        )
    if request.types and c.type not in request.types:
        return out(
            Reason.TYPE_NOT_ALLOWED,
            f"type {c.type} is not among {', '.join(sorted(request.types))}",
        )
    if request.selector and not request.selector.matches(labels(c.backend)):
        has = ",".join(f"{k}={v}" for k, v in sorted(labels(c.backend).items())) or "none"
        return out(
            Reason.SELECTOR_MISMATCH,
            f"labels of {c.backend} ({has}) do not match the selector {request.selector}",
        )
    cap = request.capability
    if cap is not None and cap not in c.capabilities:
        offers = ", ".join(sorted(c.capabilities)) or "nothing"
        return out(Reason.CAPABILITY_MISSING, f"needs {cap}; offers {offers}")
    need = request.min_context
    if need and (c.context_length or 0) < need:
        has = "an unknown context length" if c.context_length is None else f"{c.context_length}"
        return out(Reason.CONTEXT_TOO_SMALL, f"needs {need} tokens; has {has}")
    gate = outcomes.gate(c.key, now)
    if gate is not cooldown.Gate.CLOSED:
        retry = outcomes.reopens_in(c.key, now)
        what = (
            "its trial request is running"
            if gate is cooldown.Gate.TRIAL_RUNNING
            else "after failures"
        )
        return out(
            Reason.COOLING_DOWN, f"cooling down {what}; next trial in {retry or 0:.0f} s", retry
        )
    return None


def exclusions(
    index: candidates.Index,
    request: Request,
    outcomes: cooldown.Tracker,
    now: float,
    chosen: candidates.ProviderKey | None,
) -> tuple[Exclusion, ...]:
    """Every candidate a request leaves out, with its reason; absences for named models."""
    result: list[Exclusion] = []
    seen: set[candidates.ProviderKey] = set()
    for name in request.models or (None,):
        if name is not None:
            for absent in index.absences(name):
                verb = "loaded" if absent.adapter else "pulled"  # an adapter is loaded
                detail = (
                    f"declared on {absent.backend}, not {verb} yet"
                    if absent.declared
                    else f"{absent.backend} does not serve it"
                )
                result.append(
                    Exclusion(
                        absent.backend, name, Reason.MODEL_ABSENT, detail, declared=absent.declared
                    )
                )
        for c in index.group(name):
            if c.key in seen or c.key == chosen:
                continue
            seen.add(c.key)
            found = _reason(c, request, outcomes, now, index.labels_of)
            if found is not None:
                result.append(found)
    return tuple(result)
