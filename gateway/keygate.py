"""Keys enforced by the running gateway: who may send a request, and what it cost them.

`KeyGate` is the gateway's `access.Keys` and one of its `exchange.Observer`s. `admit` finds
the bearer token in the `keybook.KeyBook`'s keyring and checks, in memory, the model against
the key's models and pools (`permissions.allows`, over the desired state the resolver
follows), its budget (`budgets.allows` over the spend every replica wrote), its tokens and
requests per minute (`ratelimit.Limiter`, shared between replicas by `gateway.limitfeed`).
It answers with a `access.Grant` or raises `envelopes.Refusal`: 401 ``invalid_api_key``
(the token is never echoed), 403 for a model the key may not use, 429
``insufficient_quota`` for a spent budget (with ``x-should-retry: false``, and ``Retry-After``
when the period resets), 429 ``rate_limit_exceeded`` with ``Retry-After`` over a limit.
`finished` counts a finished request's ``usage`` against the key's tokens per minute and its
cost (`prices.cost`) against its budget. Pure apart from the clock: no I/O on the request path.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable

from gateway import (
    access,
    budgets,
    envelopes,
    exchange,
    keybook,
    keys,
    permissions,
    prices,
    ratelimit,
)
from runtimestate import desired, echo

RATE_LIMITED = "rate_limit_error"
QUOTA = "insufficient_quota"
NO_STATE = desired.DesiredState(backends=(), models=(), pools=())


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def unknown(token: str | None) -> envelopes.Refusal:
    """401 for a missing, unknown or revoked key; the token is never part of it."""
    said = "no API key was sent" if token is None else "the API key is not valid (or revoked)"
    return envelopes.Refusal(
        401,
        f"{said}: send Authorization: Bearer llmk-... with a key made by llmctl key create",
        code="invalid_api_key",
    )


class KeyGate:
    """Admits requests by their key and counts what they used (``clock``: epoch seconds)."""

    def __init__(
        self,
        book: keybook.KeyBook,
        limiter: ratelimit.Limiter,
        state: Callable[[], desired.DesiredState | None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.limiter = limiter
        self._state = state
        self._clock = clock

    def visible(self, token: str | None) -> Callable[[str], bool]:
        """The models the token's key may use, as a predicate; 401 for no valid key."""
        value = self._key(token).spec
        state = self._state() or NO_STATE
        return lambda model: permissions.allows(value, model, state)

    def _key(self, token: str | None) -> keys.Key:
        key = None if token is None else self.book.keyring.lookup(token)
        if key is None:
            raise unknown(token)
        return key

    async def admit(self, token: str | None, model: str) -> access.Grant:
        key = self._key(token)
        value = key.spec
        if not permissions.allows(value, model, self._state() or NO_STATE):
            raise envelopes.Refusal(
                403,
                f"key {key.name} may not use model {echo.quoted(model)}; "
                f"llmctl key update {key.name} --model ... or --pool ... allows it",
                code="model_not_allowed",
                param="model",
            )
        now = self._clock()
        if value.budget_microusd is not None:
            self._budget(key, now)
        if value.tpm is not None:
            decision = self.limiter.check(f"{key.id}:tpm", value.tpm, now)
            if not decision.admitted:
                raise _limited(key, f"{value.tpm} tokens", decision)
        if value.rpm is not None:
            decision = self.limiter.admit(f"{key.id}:rpm", value.rpm, now)
            if not decision.admitted:
                raise _limited(key, f"{value.rpm} requests", decision)
        return access.Grant(key)

    def _budget(self, key: keys.Key, now: float) -> None:
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        spent = self.book.spent(key.id, budgets.period_of(key.spec.period, at))
        verdict = budgets.allows(key.spec, spent, at)
        if verdict.allowed:
            return
        headers = {"x-should-retry": "false"}
        if verdict.retry_after_s is not None:
            headers |= _retry_after(verdict.retry_after_s)
        raise envelopes.Refusal(429, verdict.message, QUOTA, code=QUOTA, headers=headers)

    def finished(self, record: exchange.Exchange) -> None:
        """Count the exchange's tokens and cost against its key."""
        key = None if record.grant is None else record.grant.key
        if key is None or record.usage is None:
            return
        now = self._clock()
        if key.spec.tpm is not None:
            self.limiter.record(f"{key.id}:tpm", now, record.usage.total_tokens)
        cost = prices.cost(record.usage, record.model, self.book.prices)
        if cost:
            at = dt.datetime.fromtimestamp(now, dt.UTC)
            self.book.charge(key.id, budgets.period_of(key.spec.period, at), cost)


def _limited(key: keys.Key, limit: str, decision: ratelimit.Decision) -> envelopes.Refusal:
    return envelopes.Refusal(
        429,
        f"key {key.name} is over its limit of {limit} per minute; retry after "
        f"{max(1, math.ceil(decision.retry_after_s))} s",
        RATE_LIMITED,
        code="rate_limit_exceeded",
        headers=_retry_after(decision.retry_after_s),
    )
