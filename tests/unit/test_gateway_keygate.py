"""The key gate's decisions (`gateway.keygate.KeyGate.admit`), in memory with a set clock: what a
key over its requests per minute or its budget gets, and what a finished request costs it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext import asyncio as sa_asyncio

from gateway import access, envelopes, exchange, keybook, keygate, keyring, keys, prices, ratelimit

NOON = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
SECRET = "llmk-" + "a" * 43


def _gate(value: keys.KeySpec) -> tuple[keygate.KeyGate, keys.Key, list[float]]:
    key = keys.Key(7, value, keys.digest(SECRET), SECRET[:11], NOON)
    book = keybook.KeyBook(sa_asyncio.async_sessionmaker())  # never synced: memory only
    book.keyring = keyring.Keyring([key])
    book.prices = {"qwen": prices.Price("qwen", 1_000_000, 2_000_000)}
    now = [NOON.timestamp()]
    gate = keygate.KeyGate(book, ratelimit.Limiter(), lambda: None, clock=lambda: now[0])
    return gate, key, now


async def test_a_key_over_its_requests_per_minute_gets_429_until_the_window_frees() -> None:
    gate, key, now = _gate(keys.KeySpec("alice", rpm=2))
    for _ in range(2):
        assert (await gate.admit(SECRET, "qwen")).key == key
    with pytest.raises(envelopes.Refusal) as refused:
        await gate.admit(SECRET, "qwen")
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    assert refused.value.message.startswith("key alice is over its limit of 2 requests per minute")
    assert refused.value.headers["Retry-After"] == "60"
    now[0] += 60
    assert (await gate.admit(SECRET, "qwen")).key == key


async def test_a_spent_daily_budget_refuses_until_midnight_without_using_the_rpm() -> None:
    gate, key, now = _gate(keys.KeySpec("alice", rpm=1, budget_microusd=5, period=keys.Period.DAY))
    record = exchange.Exchange("/v1/chat/completions", model="qwen", grant=access.Grant(key))
    record.usage = prices.Usage(prompt_tokens=3, completion_tokens=1)  # 3 + 2 micro-USD
    gate.finished(record)
    assert gate.book.spent(key.id, "2026-12-06") == 5 * prices.PICO_PER_MICRO
    with pytest.raises(envelopes.Refusal) as refused:
        await gate.admit(SECRET, "qwen")
    assert (refused.value.status, refused.value.kind) == (429, "insufficient_quota")
    assert refused.value.headers == {"x-should-retry": "false", "Retry-After": str(12 * 3600)}
    assert "key alice has spent its day budget of 0.000005 USD" in refused.value.message
    assert gate.limiter.used("7:rpm", now[0]) == 0
    now[0] += 12 * 3600  # a new day: the budget starts again
    assert (await gate.admit(SECRET, "qwen")).key == key


async def test_a_key_without_the_model_among_its_models_gets_403_and_no_token_gets_401() -> None:
    gate, _, _ = _gate(keys.KeySpec("alice", models=("llama3",)))
    assert (await gate.admit(SECRET, "llama3:latest")).key is not None
    with pytest.raises(envelopes.Refusal) as refused:
        await gate.admit(SECRET, "qwen")
    assert refused.value.status == 403
    with pytest.raises(envelopes.Refusal) as refused:
        await gate.admit(None, "llama3")
    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")
