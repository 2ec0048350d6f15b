"""How a model takes upstream upgrades (issue 19): its `updatePolicy` and `maxUnavailable`.

`Rollout` is a model spec's value: ``manual`` (the default: an upgrade is only reported, until
``llmctl model upgrade`` asks for it) or ``auto`` (the cycle rolls it onto every backend), and
`max_unavailable` (default 1), the copies of the model that may be upgrading at once. `policy`
and `max_unavailable` validate what a user gave, with a message naming the fix. Pure: used by
`runtimestate.desired.spec`, the store, the declarative files and the CLI.
"""

from __future__ import annotations

import dataclasses
import enum

MAX_UNAVAILABLE_LIMIT = 1000


class UpdatePolicy(enum.StrEnum):
    """Whether an available upgrade is rolled out by itself."""

    MANUAL = "manual"
    AUTO = "auto"


@dataclasses.dataclass(frozen=True, slots=True)
class Rollout:
    """A model's upgrade policy and how many of its copies may be out at once."""

    policy: UpdatePolicy = UpdatePolicy.MANUAL
    max_unavailable: int = 1


DEFAULT = Rollout()


def policy(value: object) -> UpdatePolicy:
    """``manual`` or ``auto`` (any case). Raises ValueError naming the valid ones."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in {p.value for p in UpdatePolicy}:
        raise ValueError(f"updatePolicy must be manual or auto, not {value!r}")
    return UpdatePolicy(text)


def max_unavailable(value: object) -> int:
    """A whole number from 1 to `MAX_UNAVAILABLE_LIMIT`. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"maxUnavailable must be a whole number of at least 1, not {value!r}")
    if value > MAX_UNAVAILABLE_LIMIT:
        raise ValueError(f"maxUnavailable must be at most {MAX_UNAVAILABLE_LIMIT}, not {value}")
    return value
