"""The resolver library: pick a provider (backend + model) for a request from the runtime state.

Called by applications, in-process (`Resolver.from_state`) or in any other process
(`Resolver.from_database`), and by ``llmctl resolve``. A request names preferred models in order (or
none), a capability, a minimum context length, allowed backend types, a session key and a policy;
the answer is a `Resolution`: the chosen `Provider`, the ordered fallbacks and, on demand, why every
other candidate was excluded. Selection runs on an index built once per snapshot
(`runtimestate.resolver.candidates`), ranked by `runtimestate.resolver.policies`; outcomes that
callers report feed a per-provider circuit breaker and the adaptive policy
(`runtimestate.resolver.cooldown`, kept by `runtimestate.resolver.ledger`), shared with the
fleet's other resolver processes over NATS (`runtimestate.resolver.exchange`).

Health: a Ready backend is routable. A Degraded one (serving its last good list) is excluded
by default (reason ``backend_degraded``); with ``allow_degraded`` it is ranked after every
Ready candidate of the same model. Unreachable and Unknown are excluded (``backend_not_ready``).
Capabilities and context lengths are read from the snapshot only (declared overrides belong
where the cycle builds the snapshot, so every reader agrees); the desired state is consulted
only for credentials and, when a request has a selector, for the backends' labels (reason
``selector_mismatch``).

The decisions themselves are pure (`candidates`, `policies`, `cooldown`, `resolution`,
`diagnosis`: no clock, no I/O); this module adds the clock, the sources and the wiring.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

from dwqueue import natsauth
from runtimestate import credentials, desired, echo, snapshot
from runtimestate.resolver import (
    candidates,
    cooldown,
    diagnosis,
    ledger,
    mirror,
    policies,
    resolution,
    signals,
)

Closer = Callable[[], Any]
_MAX_TURNS = 65536  # round-robin counters kept; garbage names cannot grow them for ever


def _same_routing(a: snapshot.LLMState, b: snapshot.LLMState) -> bool:
    """Whether two states of a backend give the same candidates and explanations."""
    return (a.id, a.type, a.base_url, a.phase, a.load, a.models, a.pulled_models) == (
        b.id, b.type, b.base_url, b.phase, b.load, b.models, b.pulled_models,
    )  # fmt: skip


class Resolver(ledger.Ledger):
    """Picks providers from whatever snapshot ``source`` returns (called on every request).

    ``specs`` returns the desired state, used only by `Provider.credentials`. ``rng``,
    ``clock`` (monotonic seconds) and ``wall_clock`` (epoch seconds, for profiles' times) are
    injectable for tests. What callers report (in flight, outcomes, profiles, sharing) is
    kept by the base, `runtimestate.resolver.ledger.Ledger`. Not thread-safe: use it from one
    event loop or thread (decisions take microseconds; a lock around them is cheap).
    """

    def __init__(
        self,
        source: Callable[[], snapshot.Snapshot],
        *,
        specs: Callable[[], desired.DesiredState | None] | None = None,
        environ: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        breaker: cooldown.Policy = cooldown.Policy(),
        exploration: float = 0.05,
        closer: Closer | None = None,
    ) -> None:
        self._source = source
        self._specs = specs
        self._environ = environ if environ is not None else os.environ
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - routing, not crypto
        super().__init__(clock, wall_clock, breaker, lambda: self.index().ordinals.of_key)
        self._closer = closer
        self._exploration = exploration
        # Round-robin turns by what requests ask for, kept across snapshots: a new index
        # (every cycle that moves a vLLM load, say) must not send everyone back to the first.
        self._turns: dict[candidates.PoolKey, int] = {}
        self._snapshot: snapshot.Snapshot | None = None
        self._index: candidates.Index | None = None
        self._per_backend: dict[
            str, tuple[snapshot.LLMState, tuple[candidates.Candidate, ...]]
        ] = {}

    # --- sources -------------------------------------------------------------------------

    @classmethod
    def from_state(
        cls, state: Any, *, desired: desired.DesiredState | None = None, **options: Any
    ) -> Self:
        """A resolver over ``state.get()`` (a `runtimestate.state.State`), read per request.

        Providers hand out credentials from the desired state the latest backend cycle read
        (`State.last_desired`), so a backend declared since is found after the next cycle;
        ``desired`` pins one instead (a state with no cycles yet, say).
        """
        if desired is not None:
            pinned = desired
            return cls(state.get, specs=lambda: pinned, **options)
        return cls(state.get, specs=state.last_desired, **options)

    @classmethod
    def from_snapshot(
        cls, snap: snapshot.Snapshot, *, desired: desired.DesiredState | None = None, **options: Any
    ) -> Self:
        """A resolver over one fixed snapshot (the CLI, tests, benchmarks)."""
        specs = None if desired is None else (lambda: desired)
        return cls(lambda: snap, specs=specs, **options)

    @classmethod
    async def from_database(
        cls,
        url: str,
        nats_url: str | None = None,
        prefix: str = "llmctl",
        *,
        nats_auth: natsauth.NatsAuth | None = None,
        refresh_s: float | None = None,
        share_outcomes: bool = True,
        **options: Any,
    ) -> Self:
        """A resolver over the persisted status, followed on NATS when ``nats_url`` is given.

        NATS is connected to with ``nats_auth`` (credentials, TLS); None reads them from the
        ``LLMCTL_NATS_*`` variables (`natsauth.NatsAuth.from_environment`). When NATS refuses
        them or cannot be reached, `natsauth.NatsRefused` or `natsauth.NatsUnreachable`
        (both ``ConnectionError``) say why and what to fix in their message.

        The status is re-read every ``refresh_s`` (default 0.5 s without NATS, 30 s with). With
        NATS, outcomes are shared with the fleet's other resolvers (the `share_outcomes`
        method) unless the ``share_outcomes`` argument is False. Call `aclose` (or use
        ``async with``). Raises what `runtimestate.resolver.mirror.Mirror.open` raises.
        """
        if nats_url is not None and nats_auth is None:
            nats_auth = natsauth.NatsAuth.from_environment()
        source = await mirror.Mirror.open(url, nats_url, prefix, refresh_s, nats_auth)
        made = cls(
            lambda: source.snapshot, specs=lambda: source.desired, closer=source.aclose, **options
        )
        if share_outcomes and source.client is not None:
            try:
                await made.share_outcomes(source.client, prefix)
            except BaseException:
                await made.aclose()
                raise
        return made

    async def aclose(self) -> None:
        """Stop sharing outcomes, and following the database and NATS. Idempotent."""
        await self._stop_sharing()
        closer, self._closer = self._closer, None
        if closer is not None:
            await closer()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def desired_state(self) -> desired.DesiredState | None:
        """The desired state this resolver follows (pools, for a gateway's keys); None if
        it has none (built from a bare snapshot) or read none yet."""
        return None if self._specs is None else self._specs()

    # --- deciding ------------------------------------------------------------------------

    def index(self) -> candidates.Index:
        """The index of the current snapshot.

        Rebuilt only when the snapshot object changes, and not even then when no backend
        changed in a way routing sees (a new ``last_ok_at`` every cycle changes nothing).
        """
        snap = self._source()
        if snap is self._snapshot and self._index is not None:
            return self._index
        previous = self._per_backend
        self._per_backend = {
            name: self._candidates_of(s, previous) for name, s in snap.backends.items()
        }
        same = (
            self._index is not None
            and len(previous) == len(self._per_backend)
            and all(
                previous.get(name, (None, None))[1] is built
                for name, (_, built) in self._per_backend.items()
            )
        )
        if same and self._index is not None:
            self._index.refresh(snap)
        else:
            self._index = candidates.Index(snap, lambda s: self._per_backend[s.name][1])
            self._book = signals.LoadBook(self._index, self._inflight, self.outcomes)
        self._snapshot = snap
        return self._index

    @staticmethod
    def _candidates_of(
        state: snapshot.LLMState,
        previous: Mapping[str, tuple[snapshot.LLMState, tuple[candidates.Candidate, ...]]],
    ) -> tuple[snapshot.LLMState, tuple[candidates.Candidate, ...]]:
        cached = previous.get(state.name)
        if cached is not None and (cached[0] is state or _same_routing(cached[0], state)):
            return state, cached[1]
        return state, candidates.candidates_of(state)

    def resolve(self, request: resolution.Request) -> resolution.Resolution:
        """Choose a provider for ``request``.

        No side effect except advancing round-robin turns and, when the choice is a
        half-open provider's trial, marking that trial as started. Raises `NoAvailableModels`
        when no ready backend serves any requested model, `NoSatisfactoryModel` when some do
        but none passes the request's filters or the cooldown.
        """
        index = self.index()
        blocked = self.outcomes.blocked
        now = self._clock()
        if now >= self.outcomes.next_decay:
            self._decay(now)
        min_context, degraded = request.min_context, request.allow_degraded
        selector = request.selector
        if selector.requirements:  # a tuple's truth: the empty selector costs nothing here
            self._label(index)
        position = -1
        # The loop mirrors `resolution.tiers`, inlined: this is the hot path.
        for name in request.models or (None,):
            pool = index.pool(name, request.capability, request.types, selector)
            tiers = [(pool.ready, pool.ready_contexts)]
            if degraded:
                tiers.append((pool.degraded, pool.degraded_contexts))
            for columns, contexts in tiers:
                position += 1
                count = candidates.at_least(contexts, min_context)
                if not count:
                    continue
                masked: set[int] = set()
                if blocked and not pool.keys.isdisjoint(blocked):
                    masked, trial = self._mask(columns, count, now)
                    if trial is not None:
                        token = self.outcomes.start_trial(columns.keys[trial], now)
                        signals = self.signals(None, request)
                        return resolution.Resolution(
                            self, index, request, columns, count, position, now, signals, trial,
                            masked=masked, trial=token,
                        )  # fmt: skip
                    if len(masked) == count:
                        continue
                signals = self.signals(pool, request)
                chosen = policies.pick(request.policy, columns, count, signals, masked)
                return resolution.Resolution(
                    self, index, request, columns, count, position, now, signals, chosen,
                    masked=masked,
                )  # fmt: skip
        raise diagnosis.failure(
            request, resolution.exclusions(index, request, self.outcomes, now, None), index
        )

    def _label(self, index: candidates.Index) -> None:
        """Make ``index`` hold the backends' labels of the current desired state, for a
        selector (labels are spec: the snapshot does not carry them). Raises `InvalidRequest`
        when this resolver has no specs to read them from."""
        if self._specs is None:
            raise resolution.InvalidRequest(
                "selector: this resolver was built without the backends' specs, where their "
                "labels are; build it with Resolver.from_state, Resolver.from_database, or "
                "from_snapshot(..., desired=...)"
            )
        wanted = self._specs()
        if wanted is not index.labelled_by:
            labels = {} if wanted is None else {b.name: b.spec.labels for b in wanted.backends}
            index.relabel(wanted, labels)

    def _decay(self, now: float) -> None:
        penalised = list(self.outcomes.penalty)
        self.outcomes.decay(now)
        if self._book is not None:
            self._book.outcomes_changed(penalised)

    def _mask(
        self, columns: candidates.Columns, count: int, now: float
    ) -> tuple[set[int], int | None]:
        """The positions (below ``count``) cooling down, and the first one due for its trial."""
        blocked, position = self.outcomes.blocked, columns.position
        keys = (
            blocked if len(blocked) <= count else [k for k in columns.keys[:count] if k in blocked]
        )
        masked: set[int] = set()
        trial = None
        for key in keys:
            i = position.get(key)
            if i is None or i >= count:
                continue
            masked.add(i)
            if trial is None and self.outcomes.gate(key, now) is cooldown.Gate.TRIAL_DUE:
                trial = i
        return masked, trial

    def signals(
        self, pool: candidates.Pool | None, request: resolution.Request
    ) -> policies.Signals:
        """The policy inputs for one decision; advances the pool's round-robin turn."""
        turn = 0
        if pool is not None:
            turn = self._turns.get(pool.key, -1) + 1
            if not turn and len(self._turns) >= _MAX_TURNS:
                self._turns.clear()
            self._turns[pool.key] = turn
        session = 0
        if request.session and request.policy is policies.Policy.STICKY:
            session = candidates.stable_hash(request.session)
        book = self._book
        assert book is not None  # made with the index, before any decision
        return policies.Signals(
            book.load,
            book.adaptive,
            self._rng,
            turn,
            session,
            self._exploration,
        )

    # --- outcomes and load ---------------------------------------------------------------

    def provider(
        self, candidate: candidates.Candidate, trial: int | None = None
    ) -> resolution.Provider:
        return resolution.Provider(candidate, self._secret, trial)

    def _secret(self, backend: str) -> credentials.Secret | None:
        if self._specs is None:
            raise credentials.CredentialError(
                "this resolver was built without the backends' specs; build it with "
                "Resolver.from_state, Resolver.from_database, or from_snapshot(..., desired=...)"
            )
        wanted = self._specs()
        if wanted is None:
            raise credentials.CredentialError(
                "no desired state has been read yet: run a backend cycle first"
            )
        found = wanted.backend(backend)
        if found is None:
            raise credentials.CredentialError(f"backend {echo.quoted(backend)} is not declared")
        return credentials.resolve(found.spec.credentials, self._environ)
