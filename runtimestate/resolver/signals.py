"""The resolver's per-request signals as lists by candidate ordinal, kept in step as they change.

Made by `runtimestate.resolver` for each candidate index and read by
`runtimestate.resolver.policies`, which score a pool with one gather of a list
(`candidates.Columns.by_ordinal`) instead of a dict lookup per candidate and signal. The truth stays
where it was, in the resolver's in-flight counts and the `cooldown.Tracker`; a `LoadBook` derives
two lists from them:

    load[i]      `policies.least_loaded` of i: (1 + static load + requests in flight on its
                 backend) x `policies.error_factor` of its recent error rate
    adaptive[i]  `policies.measured_cost` of i (latency x error factor) x (1 + in flight);
                 0.0 while i was never measured, so it is tried first

and rewrites only what a change touches: one entry per reported outcome, the penalised ones when
error rates fade, and a backend's candidates when its in-flight count moves. A backend's
candidates have consecutive ordinals, so that last one is two slice assignments of C-level
``map`` calls, not a Python loop. Pure bookkeeping: no clock, no I/O.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Mapping

from runtimestate.resolver import candidates, cooldown, policies

_add, _mul, _repeat = operator.add, operator.mul, itertools.repeat


class LoadBook:
    """The two signal lists of one index (see the module docstring)."""

    __slots__ = (
        "_backend_of", "_factor", "_inflight", "_keys", "_measured", "_ordinals", "_static",
        "_tracker", "adaptive", "load",
    )  # fmt: skip

    def __init__(
        self,
        index: candidates.Index,
        inflight: Mapping[str, int],
        tracker: cooldown.Tracker,
    ) -> None:
        self._ordinals = index.ordinals
        self._keys = tuple(c.key for c in index.all)
        self._backend_of = tuple(c.backend for c in index.all)
        # 1 + static load: `policies.least_loaded` with the in-flight count left to add.
        self._static = tuple(policies.least_loaded(c.static_load, 0, 0.0) for c in index.all)
        self._inflight, self._tracker = inflight, tracker
        size = len(self._keys)
        # What a healthy, never-measured candidate has everywhere.
        self._factor = [policies.error_factor(0.0)] * size  # error_factor by ordinal
        self._measured = [policies.measured_cost(None, 0.0)] * size  # measured_cost by ordinal
        self.load = list(self._static)
        self.adaptive = [0.0] * size
        of_key = self._ordinals.of_key
        self._remeasure(of_key[k] for k in {*tracker.penalty, *tracker.latency} if k in of_key)
        for backend in self._ordinals.of_backend:
            self.inflight_changed(backend)

    def _remeasure(self, ordinals: Iterable[int]) -> None:
        penalty, latency, keys = self._tracker.penalty, self._tracker.latency, self._keys
        for i in ordinals:
            errors = penalty.get(keys[i], 0.0)
            self._factor[i] = policies.error_factor(errors)
            self._measured[i] = policies.measured_cost(latency.get(keys[i]), errors)

    def inflight_changed(self, backend: str) -> None:
        """``backend``'s count of requests in flight moved."""
        span = self._ordinals.of_backend.get(backend)
        if span is None:
            return
        start, stop = span
        busy = self._inflight.get(backend, 0)
        self.load[start:stop] = map(
            _mul, map(_add, self._static[start:stop], _repeat(busy)), self._factor[start:stop]
        )
        self.adaptive[start:stop] = map(_mul, self._measured[start:stop], _repeat(1 + busy))

    def outcomes_changed(self, keys: Iterable[cooldown.Key]) -> None:
        """The error rates or latencies of ``keys`` moved."""
        of_key, inflight = self._ordinals.of_key, self._inflight
        touched = [i for key in keys if (i := of_key.get(key)) is not None]
        self._remeasure(touched)
        for i in touched:
            busy = inflight.get(self._backend_of[i], 0)
            self.load[i] = (self._static[i] + busy) * self._factor[i]
            self.adaptive[i] = self._measured[i] * (1 + busy)
