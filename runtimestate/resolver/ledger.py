"""The resolver's ledger: what callers report about the providers they were given.

The base of `runtimestate.resolver.engine.Resolver` (applications call these methods on the
resolver): calls in flight (`begin`, `end`, `attempt`), outcomes (`record_outcome`, which feed
the `cooldown.Tracker` and the policies' signal lists), their sharing with the fleet's other
resolver processes (`share_outcomes`, `runtimestate.resolver.exchange`) and the learned figures
saved and restored (`export_profiles`, `import_profiles`, `runtimestate.resolver.profiles`).

It decides nothing (the engine does) and does no I/O of its own; `record_outcome` is on every
caller's hot path, so sharing only marks what to send (`exchange.Exchange.note`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any

from runtimestate.resolver import cooldown, exchange, profiles, resolution, signals


class Ledger:
    """In-flight counts and outcomes by provider; ``known`` returns the current fleet's
    provider keys (profiles are restored for those only)."""

    def __init__(
        self,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        breaker: cooldown.Policy,
        known: Callable[[], Container[cooldown.Key]],
    ) -> None:
        self._clock, self._wall_clock, self._known = clock, wall_clock, known
        self.outcomes = cooldown.Tracker(breaker)
        self._inflight: dict[str, int] = {}
        # ``_inflight`` and ``outcomes`` as lists by the current index's candidate ordinals,
        # for the policies; rebuilt with the index, kept in step by begin, end and outcomes.
        self._book: signals.LoadBook | None = None
        self._exchange: exchange.Exchange | None = None  # sharing outcomes on NATS

    def record_outcome(self, provider: resolution.Provider, ok: bool, latency_s: float) -> None:
        """Report how a call to ``provider`` went; feeds the cooldown and the adaptive policy,
        and, when outcomes are shared, the fleet's other resolvers (sent from a task)."""
        key = provider.key
        self.outcomes.record(key, ok, latency_s, self._clock(), provider.trial)
        if self._book is not None:
            self._book.outcomes_changed((key,))
        if self._exchange is not None:
            self._exchange.note(key)

    def _outcomes_changed(self, keys: Iterable[cooldown.Key]) -> None:
        if self._book is not None:
            self._book.outcomes_changed(keys)

    async def share_outcomes(self, client: exchange.Client, prefix: str = "llmctl") -> None:
        """Publish this resolver's breaker transitions and figures on
        ``<prefix>.v1.outcomes.<backend>`` and apply every other resolver's; `aclose` stops it
        (the client stays the caller's). Raises `nats.errors.Error` when the subscription
        fails. Calling it again replaces the previous sharing."""
        await self._stop_sharing()
        self._exchange = await exchange.Exchange.start(
            client, prefix, self.outcomes, self._clock, self._outcomes_changed
        )

    async def _stop_sharing(self) -> None:
        shared, self._exchange = self._exchange, None
        if shared is not None:
            await shared.aclose()

    def export_profiles(self) -> dict[str, Any]:
        """The figures learned so far, per provider, as a JSON-ready profiles document
        (`runtimestate.resolver.profiles`). No side effect."""
        wall = dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)
        return profiles.export(self.outcomes, self._clock(), wall)

    def import_profiles(self, doc: object) -> tuple[cooldown.Key, ...]:
        """Restore the figures of a document `export_profiles` gave (or its JSON text) for the
        providers the current fleet has (the others are skipped); returns their keys.

        Raises `profiles.ProfileError`, naming the problem, for anything but a version-1
        profiles document, before changing anything."""
        wall = dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)
        restored = profiles.restore(doc, self.outcomes, self._known(), self._clock(), wall)
        self._outcomes_changed(restored)
        return restored

    def begin(self, provider: resolution.Provider) -> None:
        """Count a request in flight on ``provider``'s backend (for least_loaded/adaptive)."""
        self._set_inflight(provider.backend, self._inflight.get(provider.backend, 0) + 1)

    def end(self, provider: resolution.Provider) -> None:
        """The request `begin` counted has finished."""
        self._set_inflight(provider.backend, self._inflight.get(provider.backend, 0) - 1)

    def _set_inflight(self, backend: str, count: int) -> None:
        if count > 0:
            self._inflight[backend] = count
        else:
            self._inflight.pop(backend, None)
        if self._book is not None:
            self._book.inflight_changed(backend)

    def inflight(self, provider: resolution.Provider) -> int:
        return self._inflight.get(provider.backend, 0)

    @contextlib.contextmanager
    def attempt(self, provider: resolution.Provider) -> Iterator[resolution.Provider]:
        """``with resolver.attempt(p):`` counts the call in flight and records its outcome.

        An exception inside the block is a failure (and propagates); cancellation
        (a `BaseException` such as `asyncio.CancelledError`) is not counted either way.
        """
        self.begin(provider)
        started = self._clock()
        try:
            yield provider
        except Exception:
            self.record_outcome(provider, False, self._clock() - started)
            raise
        else:
            self.record_outcome(provider, True, self._clock() - started)
        finally:
            self.end(provider)
