"""Prices and costs: what a model's tokens cost, and the cost of one request from its usage.

Called by `gateway.pricestore` (values), the ``llmctl price`` and ``key`` commands (parsing
and showing USD) and the gateway's accounting (`cost`). Pure: no I/O.

Money is kept in whole numbers, never floats: a price is micro-USD per million tokens, so one
token costs that many pico-USD, and a request's cost in pico-USD is exact. Budgets are micro-USD.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping

from gateway import permissions
from runtimestate import echo

MICRO = 1_000_000  # micro-USD per USD
PICO_PER_MICRO = 1_000_000
MAX_USD = decimal.Decimal(1_000_000_000)


class PriceRefused(ValueError):
    """A price, budget or amount of USD that cannot be used; the message names the fix."""


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    """A model's price: micro-USD per million input (prompt) and output (completion) tokens."""

    model: str
    input_microusd: int
    output_microusd: int


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """A response's ``usage``: the tokens the backend counted."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def microusd(text: str, option: str) -> int:
    """USD as written (``0.15``, ``25``) in micro-USD; `PriceRefused` naming ``option`` for
    anything else (negative, not a number, finer than a micro-USD, absurdly large)."""
    try:
        amount = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        amount = decimal.Decimal("NaN")
    if not amount.is_finite() or amount < 0 or amount > MAX_USD:
        raise PriceRefused(f"{option} {echo.quoted(text)} is not an amount of USD; give e.g. 0.15")
    micro = amount * MICRO
    if micro != micro.to_integral_value():
        raise PriceRefused(f"{option} {echo.quoted(text)} is finer than a millionth of a USD")
    return int(micro)


def usd(micro: int) -> str:
    """Micro-USD as people read USD: ``0.15``, ``25``, ``0.000001``."""
    text = format(decimal.Decimal(micro) / MICRO, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def cost_picousd(usage: Usage, price: Price) -> int:
    """What a request cost in pico-USD: its tokens at the model's price (exact)."""
    return (
        usage.prompt_tokens * price.input_microusd + usage.completion_tokens * price.output_microusd
    )


def find(table: Mapping[str, Price], model: str) -> Price | None:
    """``model``'s price: the one declared under its name, else under another name of the
    same model (`gateway.permissions.same_model`: ``llama3`` for ``llama3:latest``); None if
    none."""
    exact = table.get(model)
    if exact is not None:
        return exact
    return next(
        (p for name, p in sorted(table.items()) if permissions.same_model(name, model)), None
    )


def cost(usage: Usage, model: str, table: Mapping[str, Price]) -> int | None:
    """The pico-USD cost of a request for ``model`` from the price ``table``; None when the
    operator declared no price for it (the gateway then counts no spend)."""
    price = find(table, model)
    return None if price is None else cost_picousd(usage, price)
