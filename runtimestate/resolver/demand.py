"""What a caller asks the resolver for: the `Request` value, checked when it is made.

Made by applications, ``llmctl resolve`` and the gateway; read by every part of
`runtimestate.resolver` (re-exported as ``resolver.Request``). A request that cannot be valid
raises `InvalidRequest` naming the field. ``selector`` keeps only backends whose labels match
(a `selectors.Selector`, or its text, parsed here); the empty one, the default, selects every
backend and costs nothing on the hot path. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses

from runtimestate import echo
from runtimestate.desired import selectors, spec
from runtimestate.resolver import policies

_CAPABILITIES = frozenset(c.value for c in spec.Capability)
_TYPES = frozenset(t.value for t in spec.BackendType)


class InvalidRequest(ValueError):
    """A request that cannot be valid; the message names the field and what would be."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """What a caller needs. ``models`` in preference order; empty means any model.
    ``selector`` (or its text, e.g. ``"zone=eu,gpu in (h100)"``) keeps the backends whose
    labels match; the default selects every backend."""

    models: tuple[str, ...] = ()
    capability: str | None = None
    min_context: int | None = None
    types: frozenset[str] = frozenset()
    session: str | None = None
    policy: policies.Policy = policies.Policy.LEAST_LOADED
    allow_degraded: bool = False
    selector: selectors.Selector = selectors.EVERYTHING

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            raise InvalidRequest("models: give a sequence of names, e.g. ('qwen2:7b',)")
        models = tuple(self.models)
        if not all(isinstance(m, str) and m.strip() for m in models):
            raise InvalidRequest("models: every model name must be a non-empty string")
        if self.capability is not None and self.capability not in _CAPABILITIES:
            raise InvalidRequest(
                f"capability: {echo.quoted(self.capability)} is not one of chat|embed|prompt|stream"
            )
        if self.min_context is not None and (
            isinstance(self.min_context, bool)
            or not isinstance(self.min_context, int)
            or self.min_context < 1
        ):
            raise InvalidRequest(
                f"min_context: {echo.quoted(self.min_context)} must be a positive number of tokens"
            )
        types = frozenset(str(t) for t in self.types)
        if types - _TYPES:
            valid = "|".join(sorted(_TYPES))
            raise InvalidRequest(
                f"types: {echo.quoted(sorted(types - _TYPES))} are not among {valid}"
            )
        try:
            policy = policies.Policy(self.policy)
        except ValueError:
            valid = "|".join(p.value for p in policies.Policy)
            raise InvalidRequest(
                f"policy: {echo.quoted(self.policy)} is not one of {valid}"
            ) from None
        if policy is policies.Policy.STICKY and not self.session:
            raise InvalidRequest("policy sticky needs a session key (session=...)")
        capability = None if self.capability is None else str(self.capability)
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "capability", capability)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "selector", _selector(self.selector))


def _selector(value: object) -> selectors.Selector:
    """The request's selector; its text is parsed. Raises `InvalidRequest` naming the field."""
    if isinstance(value, selectors.Selector):
        return value
    if not isinstance(value, str):
        raise InvalidRequest(
            f"selector: {echo.quoted(value)} is neither a selector nor its text (e.g. 'zone=a')"
        )
    try:
        return selectors.parse(value)
    except selectors.SelectorError as exc:
        raise InvalidRequest(str(exc)) from None
