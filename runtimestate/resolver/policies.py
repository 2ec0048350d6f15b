"""The resolver's ranking policies: which qualifying candidate to choose, and in what order to
fall back.

Called by `runtimestate.resolver` on every decision with the first ``n`` candidates of a
`candidates.Columns` (what passed the filters) and the `Signals` callers reported. Choosing is a few
C-level passes over the columns (or O(1) for random and round robin): a gather of the per-request
signals by candidate ordinal (`candidates.Columns.by_ordinal`, from the lists
`runtimestate.resolver.signals.LoadBook` keeps), one ``map`` to add the static load, ``min``.
Ordering the fallbacks is a sort, done only when a caller asks for them. Ties rotate with the pool's
turn counter, so idle identical backends share the traffic instead of the first one taking it all.
Pure: no I/O, no clock; randomness comes in as a `random.Random`.

    random            uniform
    round_robin       the pool's turn counter, modulo the candidates
    highest_context   the largest context length; ties by load
    least_loaded      (1 + vLLM running + waiting + in-flight calls callers report + 1 for a
                      cold Ollama model) x (1 + 9 x recent error rate): a provider failing
                      every call looks ten times as busy as it is, so failing fast (and so
                      never having anything in flight) is not rewarded
    sticky            rendezvous hashing of (session key, provider): stable across processes,
                      only the sessions of a provider that left move, and an even spread
    warm_first        loaded models first (vLLM and cloud models always are), then least loaded
    adaptive          lowest EWMA latency of successful calls x (1 + 9 x error rate) x
                      (1 + in-flight); never-measured providers first; one that has failed
                      but never succeeded last; a share ``exploration`` of decisions is random
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import random
import sys
from collections.abc import Callable, Sequence, Set
from typing import Any

from runtimestate.resolver import candidates

_ERROR_WEIGHT = 9.0  # a provider failing every call looks ten times slower and busier
UNPROVEN_S = 1e6  # adaptive: the latency of a provider that has failed and never succeeded

_add = operator.add
_SLOT_BYTES = candidates.SLOT_BITS // 8
_ORDER = sys.byteorder  # memoryview.cast reads native order


class Policy(enum.StrEnum):
    RANDOM = "random"
    ROUND_ROBIN = "round_robin"
    HIGHEST_CONTEXT = "highest_context"
    LEAST_LOADED = "least_loaded"
    STICKY = "sticky"
    WARM_FIRST = "warm_first"
    ADAPTIVE = "adaptive"


@dataclasses.dataclass(slots=True)
class Signals:
    """What callers and outcomes tell the policies, read (never changed) while ranking.

    ``load`` and ``adaptive`` are indexed by candidate ordinal (`candidates.Ordinals`) and kept
    by `runtimestate.resolver.signals.LoadBook` from `error_load` and `measured_cost`.
    """

    load: Sequence[float]  # the least-loaded score, by candidate ordinal
    adaptive: Sequence[float]  # measured_cost x (1 + in flight), by candidate ordinal
    rng: random.Random
    turn: int = 0  # the pool's counter: drives round robin and rotates ties
    session: int = 0  # the stable hash of the session key (sticky)
    exploration: float = 0.05  # the share of adaptive decisions that explore


def error_factor(errors: float) -> float:
    """What a recent error rate (0..1) multiplies a least-loaded or adaptive score by."""
    return 1.0 + _ERROR_WEIGHT * errors


def least_loaded(static: float, inflight: int, errors: float) -> float:
    """The least-loaded score of a candidate: its static load (`candidates.Candidate`) and the
    requests in flight on its backend, plus one (so an idle provider's errors still count),
    times `error_factor`."""
    return (1.0 + static + inflight) * error_factor(errors)


def measured_cost(latency: float | None, errors: float) -> float:
    """The adaptive score before load: the latency EWMA of successful calls times
    `error_factor`, so a provider that fails fast never looks fast; then x (1 + in flight).

    Never measured (no latency, no errors): 0, tried first. Failed but never succeeded: it
    counts as UNPROVEN_S slow, after every provider that answered, until its error rate fades.
    """
    if latency is None:
        return UNPROVEN_S * error_factor(errors) if errors else 0.0
    return latency * error_factor(errors)


def loads(cols: candidates.Columns, n: int, s: Signals) -> list[float]:
    """Least-loaded scores of the first ``n`` candidates."""
    return list(cols.by_ordinal(s.load)[:n])


def _warm_first(cols: candidates.Columns, n: int, s: Signals) -> list[float]:
    return list(map(_add, cols.cold_tier[:n], cols.by_ordinal(s.load)))


def _adaptive(cols: candidates.Columns, n: int, s: Signals) -> list[float]:
    return list(cols.by_ordinal(s.adaptive)[:n])


def _rendezvous(cols: candidates.Columns, n: int, s: Signals) -> list[int]:
    # Each candidate scores (seed x session) mod 2**64, multiplicative hashing of two uniform
    # 64-bit hashes (both odd): uniform per candidate, and the minimum is spread evenly. One
    # big-integer product does every candidate at once (`candidates.packed_seeds`: a slot of
    # 128 bits each, so no product carries into its neighbour); the low halves of the slots are
    # the scores. Pure integer arithmetic, so every process agrees, and a candidate's score
    # depends on its own seed only, so only the sessions of a provider that left move. (Half
    # the cost of ``hash(seed * session)`` one by one, at 100 candidates; a tuple hash of the
    # pair skewed the spread up to 4:1.)
    size = len(cols.items) * _SLOT_BYTES
    product = (cols.seeds * (s.session | 1)).to_bytes(size, _ORDER)
    return memoryview(product).cast("Q")[: 2 * n : 2].tolist()


def _highest_context(cols: candidates.Columns, n: int, s: Signals) -> list[tuple[int, float]]:
    contexts = (-(c.context_length or 0) for c in cols.items[:n])
    return list(zip(contexts, loads(cols, n, s), strict=True))


Scores = Callable[[candidates.Columns, int, Signals], Sequence[Any]]
_SCORES: dict[Policy, Scores] = {
    Policy.LEAST_LOADED: loads,
    Policy.ADAPTIVE: _adaptive,
    Policy.STICKY: _rendezvous,
    Policy.HIGHEST_CONTEXT: _highest_context,
    Policy.WARM_FIRST: _warm_first,
}


_WORST = float("inf")
_WORST_PAIR = (_WORST, _WORST)
NO_MASK: frozenset[int] = frozenset()


def _rotating_min(scores: Sequence[Any], turn: int) -> int:
    """The index of the best score; ties go to the first at or after ``turn`` (round robin)."""
    best = min(scores)
    try:
        return scores.index(best, turn % len(scores))
    except ValueError:
        return scores.index(best)


def pick(
    policy: Policy, cols: candidates.Columns, n: int, s: Signals, masked: Set[int] = NO_MASK
) -> int:
    """The index, among the first ``n`` candidates, that ``policy`` chooses; never one in
    ``masked`` (cooling down), of which there must be fewer than ``n``."""
    match policy:
        case Policy.RANDOM:
            if not masked:
                return s.rng.randrange(n)
            allowed = [i for i in range(n) if i not in masked]
            return allowed[s.rng.randrange(len(allowed))]
        case Policy.ROUND_ROBIN:
            if not masked:
                return s.turn % n
            # Turn over the others only: skipping to the next would give it a double share.
            allowed = [i for i in range(n) if i not in masked]
            return allowed[s.turn % len(allowed)]
        case Policy.HIGHEST_CONTEXT if not masked:
            # The columns are sorted by context, desc: only the tied prefix needs scoring.
            items = cols.items
            top, tied = items[0].context_length, 1
            while tied < n and items[tied].context_length == top:
                tied += 1
            return 0 if tied == 1 else _rotating_min(loads(cols, tied, s), s.turn)
        case Policy.ADAPTIVE if s.rng.random() < s.exploration:
            return pick(Policy.RANDOM, cols, n, s, masked)
        case (
            Policy.LEAST_LOADED
            | Policy.ADAPTIVE
            | Policy.STICKY
            | Policy.WARM_FIRST
            | Policy.HIGHEST_CONTEXT
        ):
            scores: list[Any] = list(_SCORES[policy](cols, n, s))
            worst = _WORST_PAIR if policy is Policy.HIGHEST_CONTEXT else _WORST
            for i in masked:
                scores[i] = worst
            return _rotating_min(scores, s.turn)
    raise AssertionError(policy)  # pragma: no cover - the match is exhaustive


def order(
    policy: Policy,
    cols: candidates.Columns,
    n: int,
    chosen: int,
    s: Signals,
    masked: Set[int] = NO_MASK,
) -> list[candidates.Candidate]:
    """The first ``n`` candidates but ``masked`` in the order ``policy`` would try them,
    ``chosen`` first (even if masked: a trial)."""
    items = cols.items
    match policy:
        case Policy.RANDOM:
            rest = [c for i, c in enumerate(items[:n]) if i != chosen and i not in masked]
            s.rng.shuffle(rest)
        case Policy.ROUND_ROBIN:
            turns = ((chosen + i) % n for i in range(1, n))
            rest = [items[i] for i in turns if i not in masked]
        case (
            Policy.HIGHEST_CONTEXT
            | Policy.LEAST_LOADED
            | Policy.ADAPTIVE
            | Policy.STICKY
            | Policy.WARM_FIRST
        ):
            scores = _SCORES[policy](cols, n, s)
            ranked = sorted(
                (i for i in range(n) if i != chosen and i not in masked),
                key=lambda i: (scores[i], items[i].backend, items[i].model),
            )
            rest = [items[i] for i in ranked]
    return [items[chosen], *rest]
