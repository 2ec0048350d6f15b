"""Spend budgets: which period a moment falls in, and whether a key may still spend.

Called by the gateway before forwarding a request (`allows`) and when it records a request's
cost (`period_of` names the row of `gateway.keystore.add_spend`). Pure: the time is given.

Periods are calendar periods in UTC: a ``day`` budget starts again at midnight UTC, a
``month`` one on the first of the month; with no period the budget is for the key's life.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import assert_never

from gateway import keys, prices

LIFETIME = "all"


def period_of(period: keys.Period, now: dt.datetime) -> str:
    """The spend row ``now`` counts in: ``2026-12-06``, ``2026-12``, or ``all``."""
    at = now.astimezone(dt.UTC)
    match period:
        case keys.Period.DAY:
            return at.strftime("%Y-%m-%d")
        case keys.Period.MONTH:
            return at.strftime("%Y-%m")
        case keys.Period.NONE:
            return LIFETIME
        case _:
            assert_never(period)


def next_start(period: keys.Period, now: dt.datetime) -> dt.datetime | None:
    """When the period ``now`` is in ends and spending starts again; None: never."""
    at = now.astimezone(dt.UTC)
    match period:
        case keys.Period.DAY:
            return dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
        case keys.Period.MONTH:
            year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
            return dt.datetime(year, month, 1, tzinfo=dt.UTC)
        case keys.Period.NONE:
            return None
        case _:
            assert_never(period)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a key may spend more now; ``retry_after_s`` is when it may again (None: not
    before an operator raises the budget) and ``message`` says why not, for the client."""

    allowed: bool
    retry_after_s: float | None = None
    message: str = ""


def allows(key: keys.KeySpec, spent_picousd: int, now: dt.datetime) -> Verdict:
    """Whether ``key``, having spent ``spent_picousd`` in the current period, may make
    another request: yes without a budget, no once the spend reached the budget."""
    if key.budget_microusd is None:
        return Verdict(True)
    if spent_picousd < key.budget_microusd * prices.PICO_PER_MICRO:
        return Verdict(True)
    budget = prices.usd(key.budget_microusd)
    start = next_start(key.period, now)
    if start is None:
        return Verdict(False, None, f"key {key.name} has spent its budget of {budget} USD")
    wait = (start - now).total_seconds()
    when = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    message = (
        f"key {key.name} has spent its {key.period} budget of {budget} USD; it resets at {when}"
    )
    return Verdict(False, wait, message)
