"""The price table: what operators declare each model's tokens cost.

Called by the ``llmctl price`` commands and by the gateway (`table`, read at start and when
prices change, for `gateway.prices.cost`). Async functions over an `AsyncSession`; the
caller owns the transaction, nothing here commits. Raises `gateway.prices.PriceRefused` and
the store's `refusals.NotFound` (both exit 2 in the CLI).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import prices, schema
from runtimestate import echo
from runtimestate.desired import refusals


def _value(row: schema.PriceRow) -> prices.Price:
    return prices.Price(row.model, row.input_microusd, row.output_microusd)


def _check(value: prices.Price) -> prices.Price:
    model = value.model
    if not model or model != model.strip() or len(model) > 600 or not model.isprintable():
        raise prices.PriceRefused(
            f"model {echo.quoted(model)} is not a model name; give it as requests do, e.g. llama3"
        )
    if value.input_microusd < 0 or value.output_microusd < 0:
        raise prices.PriceRefused("a price must not be negative")
    return value


async def set_price(session: AsyncSession, value: prices.Price, now: dt.datetime) -> bool | None:
    """Declare a model's price: None if it is new, else whether it changed."""
    value = _check(value)
    row = await session.get(schema.PriceRow, value.model)
    if row is None:
        session.add(
            schema.PriceRow(
                model=value.model,
                input_microusd=value.input_microusd,
                output_microusd=value.output_microusd,
                updated_at=now,
            )
        )
        await session.flush()
        return None
    if _value(row) == value:
        return False
    row.input_microusd, row.output_microusd, row.updated_at = (
        value.input_microusd, value.output_microusd, now,
    )  # fmt: skip
    await session.flush()
    return True


async def all_prices(session: AsyncSession) -> list[prices.Price]:
    """Every declared price, by model name."""
    rows = await session.scalars(sa.select(schema.PriceRow).order_by(schema.PriceRow.model))
    return [_value(row) for row in rows]


async def table(session: AsyncSession) -> dict[str, prices.Price]:
    """The price table by model name, for `gateway.prices.cost`."""
    return {price.model: price for price in await all_prices(session)}


async def delete_price(session: AsyncSession, model: str) -> None:
    """Forget a model's price (its requests then cost nothing); `NotFound` if none is set."""
    row = await session.get(schema.PriceRow, model)
    if row is None:
        stored = await session.scalars(sa.select(schema.PriceRow.model))
        raise refusals.NotFound("price", model, [m for m in stored if m.lower() == model.lower()])
    await session.delete(row)
    await session.flush()
