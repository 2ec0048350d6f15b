"""Prices, costs and budgets (`gateway.prices`, `gateway.budgets`): exact money, periods in UTC."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway import budgets, keys, prices


@pytest.mark.parametrize(
    ("text", "micro"),
    [("0.15", 150_000), ("25", 25_000_000), (" 2.50 ", 2_500_000), ("0", 0), ("0.000001", 1)],
)
def test_usd_as_written_is_kept_exactly_in_micro_usd(text: str, micro: int) -> None:
    assert prices.microusd(text, "--input") == micro


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "is not an amount of USD"),
        ("abc", "is not an amount of USD"),
        ("nan", "is not an amount of USD"),
        ("inf", "is not an amount of USD"),
        ("1e12", "is not an amount of USD"),
        ("0.0000001", "finer than a millionth"),
    ],
)
def test_an_amount_that_is_not_usd_is_refused_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(prices.PriceRefused, match=f"--budget .*{message}"):
        prices.microusd(text, "--budget")


def test_micro_usd_read_back_as_people_write_usd() -> None:
    assert [prices.usd(m) for m in (150_000, 25_000_000, 1, 0, 600_000)] == [
        "0.15", "25", "0.000001", "0", "0.6",
    ]  # fmt: skip


def test_a_request_costs_its_tokens_at_the_models_price_exactly() -> None:
    table = {"llama3": prices.Price("llama3", 150_000, 600_000)}  # 0.15 and 0.60 USD per M
    usage = prices.Usage(prompt_tokens=1_000, completion_tokens=3)
    # 1000 * 0.15e-6 + 3 * 0.6e-6 USD = 151.8 micro-USD = 151_800_000 pico-USD
    assert prices.cost(usage, "llama3", table) == 151_800_000
    assert prices.cost(usage, "llama3:latest", table) == 151_800_000
    assert prices.cost(usage, "qwen2", table) is None
    assert usage.total_tokens == 1_003


def test_the_exact_name_wins_over_another_name_of_the_same_model() -> None:
    table = {
        "llama3": prices.Price("llama3", 1, 1),
        "llama3:latest": prices.Price("llama3:latest", 2, 2),
    }
    assert prices.find(table, "llama3:latest") == table["llama3:latest"]
    assert prices.find(table, "llama3") == table["llama3"]


AT = dt.datetime(2026, 12, 31, 22, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("period", "row", "restart"),
    [
        (keys.Period.DAY, "2026-12-31", dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        (keys.Period.MONTH, "2026-12", dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        (keys.Period.NONE, "all", None),
    ],
)
def test_a_budget_period_is_a_calendar_period_in_utc(
    period: keys.Period, row: str, restart: dt.datetime | None
) -> None:
    assert budgets.period_of(period, AT) == row
    assert budgets.next_start(period, AT) == restart
    # Half past midnight in Berlin on 1 January is still 31 December in UTC.
    berlin = AT.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert budgets.period_of(period, berlin) == row


def test_a_key_may_spend_until_its_budget_is_reached_then_waits_for_the_next_period() -> None:
    key = keys.KeySpec("alice", budget_microusd=25_000_000, period=keys.Period.DAY)
    budget_pico = 25_000_000 * prices.PICO_PER_MICRO
    assert budgets.allows(key, budget_pico - 1, AT).allowed
    refused = budgets.allows(key, budget_pico, AT)
    assert not refused.allowed
    assert refused.retry_after_s == 90 * 60
    assert "alice" in refused.message
    assert "day budget of 25 USD" in refused.message
    assert "2027-01-01T00:00:00Z" in refused.message


def test_a_lifetime_budget_never_resets_and_no_budget_never_refuses() -> None:
    lifetime = keys.KeySpec("alice", budget_microusd=1, period=keys.Period.NONE)
    refused = budgets.allows(lifetime, prices.PICO_PER_MICRO, AT)
    assert not refused.allowed
    assert refused.retry_after_s is None
    assert budgets.allows(keys.KeySpec("bob"), 10**18, AT).allowed
