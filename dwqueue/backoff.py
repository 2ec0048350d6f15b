"""Retry delays for failed downloads: exponential backoff with jitter, a cap and an attempt limit.

`dwqueue.leases.fail` asks `delay` when a transient failure is retried. Pure: the random draw
is a parameter (a float in [0, 1)), so the same inputs always give the same delay, and nothing
here reads a clock or sleeps.
"""

from __future__ import annotations

import dataclasses
import enum
import typing

_MAX_EXPONENT = 62  # 2**62 * any sane base overflows any sane cap; keeps floats finite


class Jitter(enum.StrEnum):
    FULL = "full"  # uniform in [0, exp): the AWS "full jitter"; spreads a thundering herd best
    DECORRELATED = "decorrelated"  # uniform in [base, 3 * previous): grows without lockstep
    NONE = "none"  # the bare exponential; for tests and humans reading logs


@dataclasses.dataclass(frozen=True)
class Policy:
    """How often and how late a transient failure is retried.

    ``max_attempts`` counts every attempt, the first included: 5 means one try and four retries.
    """

    base_s: float = 5.0
    cap_s: float = 600.0
    max_attempts: int = 5
    jitter: Jitter = Jitter.FULL

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s} and {self.cap_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")


def exponential(policy: Policy, attempt: int) -> float:
    """The un-jittered delay after failed attempt number ``attempt`` (1-based), capped."""
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    return min(policy.cap_s, policy.base_s * 2.0**exponent)


def delay(policy: Policy, attempt: int, draw: float, previous_s: float | None = None) -> float:
    """Seconds to wait before the attempt after failed attempt ``attempt`` (1-based).

    ``draw`` is a uniform random number in [0, 1). ``previous_s`` is the last delay, used by
    decorrelated jitter (when unknown, the un-jittered delay of the previous attempt stands in).
    Always within [0, cap_s].
    """
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    match policy.jitter:
        case Jitter.NONE:
            return exponential(policy, attempt)
        case Jitter.FULL:
            return draw * exponential(policy, attempt)
        case Jitter.DECORRELATED:
            previous = exponential(policy, attempt - 1) if previous_s is None else previous_s
            high = max(policy.base_s, 3.0 * previous)
            return min(policy.cap_s, policy.base_s + draw * (high - policy.base_s))
        case _:  # pragma: no cover
            typing.assert_never(policy.jitter)


def should_retry(attempts: int, max_attempts: int) -> bool:
    """Whether a job that has made ``attempts`` attempts (of ``max_attempts``) may make another."""
    return attempts < max_attempts
