"""The gateway's reply cache as a client meets it: the official openai client through an
in-process gateway over one emulated vLLM node, whose counters say how often it was asked."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators import faults
from gateway import access, application, envelopes, exchange, keys, relaying, replycache
from tests.integration import gateway_harness

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Why is the sky blue?"}]
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[exchange.Exchange] = []

    def finished(self, record: exchange.Exchange) -> None:
        self.seen.append(record)


class ByToken(access.Open):
    """Admits the tokens it knows, each as its own key (its own cache scope)."""

    def __init__(self, *tokens: str) -> None:
        self.ids = {token: i for i, token in enumerate(tokens, 1)}

    async def admit(self, token: str | None, model: str) -> access.Grant:
        if token not in self.ids:
            raise envelopes.Refusal(401, "invalid API key", code="invalid_api_key")
        spec = keys.KeySpec(token)
        key = keys.Key(self.ids[token], spec, keys.digest(token), keys.prefix(token), T0)
        return access.Grant(key)


def settings(**cache: Any) -> application.Settings:
    return application.Settings(cache=replycache.Settings(**cache))


@contextlib.asynccontextmanager
async def gateway(
    cache: application.Settings = settings(), keys_: access.Keys | None = None
) -> AsyncIterator[tuple[gateway_harness.Harness, Recorder]]:
    """One emulated vLLM node behind a gateway with ``cache`` settings; yields the harness
    (its client pointed at that gateway) and what the gateway's observer saw."""
    seen = Recorder()
    async with (
        gateway_harness.running(nodes=1) as h,
        gateway_harness.serving(h.resolver, cache, keys_, (seen,)) as url,
    ):
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
        try:
            yield gateway_harness.Harness(url, h.emulator, h.resolver, client), seen
        finally:
            await client.close()


def asked(h: gateway_harness.Harness) -> int:
    """Chat and completion requests the node answered."""
    return h.emulator.nodes[0].counters["success_stop"]


async def chat(client: openai.AsyncOpenAI, **params: Any) -> tuple[str, bytes]:
    """A non-streamed chat; returns the cache header ("" without one) and the body."""
    raw = await client.chat.completions.with_raw_response.create(
        model="qwen", messages=MESSAGES, **params
    )
    return raw.headers.get(relaying.CACHE_HEADER, ""), raw.content


async def test_a_repeated_temperature_0_chat_is_answered_from_the_cache_at_no_cost() -> None:
    async with gateway() as (h, seen):
        first = await chat(h.client, temperature=0)
        second = await chat(h.client, temperature=0)
        assert asked(h) == 1
    assert (first[0], second[0]) == ("miss", "hit")
    assert second[1] == first[1]
    assert [r.cache for r in seen.seen] == ["miss", "hit"]
    hit = seen.seen[1]
    assert (hit.status, hit.usage, hit.attempts) == (200, None, [])
    assert seen.seen[0].usage is not None


async def test_a_seeded_completion_is_cached() -> None:
    async with gateway() as (h, _):
        replies = [
            await h.client.completions.with_raw_response.create(
                model="qwen", prompt="Once upon", seed=7, temperature=0.8
            )
            for _ in range(2)
        ]
        assert asked(h) == 1
    assert [r.headers[relaying.CACHE_HEADER] for r in replies] == ["miss", "hit"]
    assert replies[0].parse().id == replies[1].parse().id


async def test_embeddings_are_cached() -> None:
    seen = Recorder()
    async with gateway_harness.running(nodes=1, runner="pooling", observers=(seen,)) as h:
        for _ in range(2):
            await h.client.embeddings.create(model="embedder", input=["a b c"])
    assert [r.cache for r in seen.seen] == ["miss", "hit"]
    assert len(seen.seen[0].attempts) == 1
    assert seen.seen[1].attempts == []


async def test_requests_that_may_differ_or_opt_out_are_never_cached() -> None:
    varied: list[dict[str, Any]] = [
        {},  # temperature absent: 1, sampled
        {"temperature": 0.7},
        {"temperature": 0, "extra_headers": {"Cache-Control": "no-store"}},
    ]
    async with gateway() as (h, seen):
        for params in varied:
            assert [(await chat(h.client, **params))[0] for _ in range(2)] == ["", ""]
        for _ in range(2):
            stream = await h.client.chat.completions.create(
                model="qwen", messages=MESSAGES, temperature=0, stream=True
            )
            assert [c async for c in stream]
        assert asked(h) == 8
        assert [(await chat(h.client, temperature=0))[0] for _ in range(2)] == ["miss", "hit"]
    assert {r.cache for r in seen.seen[:8]} == {""}


async def test_the_same_request_written_differently_is_a_hit() -> None:
    async with gateway() as (h, _), httpx.AsyncClient(base_url=h.url) as raw:
        compact = b'{"model":"qwen","temperature":0,"messages":[{"role":"user","content":"hi"}]}'
        spaced = b'{ "messages": [ {"content": "hi", "role": "user"} ],\n "temperature": 0,'
        spaced += b' "model": "qwen" }'
        headers = {"Content-Type": "application/json"}
        first = await raw.post("/chat/completions", content=compact, headers=headers)
        second = await raw.post("/chat/completions", content=spaced, headers=headers)
        assert asked(h) == 1
    assert [r.headers[relaying.CACHE_HEADER] for r in (first, second)] == ["miss", "hit"]
    assert second.content == first.content


async def test_no_cache_asks_the_provider_again_and_refreshes_the_entry() -> None:
    async with gateway() as (h, _):
        stored = await chat(h.client, temperature=0)
        fresh = await chat(h.client, temperature=0, extra_headers={"Cache-Control": "no-cache"})
        again = await chat(h.client, temperature=0)
        assert asked(h) == 2
    assert (stored[0], fresh[0], again[0]) == ("miss", "miss", "hit")
    assert fresh[1] != stored[1]
    assert again[1] == fresh[1]


async def test_two_keys_never_share_an_entry_and_a_refused_key_never_reads_one() -> None:
    async with gateway(keys_=ByToken("alice", "bob")) as (h, _):
        alice = h.client.with_options(api_key="alice")
        bob = h.client.with_options(api_key="bob")
        mallory = h.client.with_options(api_key="mallory")
        assert (await chat(alice, temperature=0))[0] == "miss"
        assert (await chat(bob, temperature=0))[0] == "miss"
        with pytest.raises(openai.AuthenticationError):
            await chat(mallory, temperature=0)
        assert (await chat(alice, temperature=0))[0] == "hit"
        assert (await chat(bob, temperature=0))[0] == "hit"
        assert asked(h) == 2


async def test_a_shared_cache_serves_one_keys_reply_to_another() -> None:
    async with gateway(settings(shared=True), ByToken("alice", "bob")) as (h, _):
        alice = await chat(h.client.with_options(api_key="alice"), temperature=0)
        bob = await chat(h.client.with_options(api_key="bob"), temperature=0)
        assert asked(h) == 1
    assert (alice[0], bob[0]) == ("miss", "hit")
    assert bob[1] == alice[1]


async def test_an_entry_expires_after_its_ttl() -> None:
    async with gateway(settings(ttl_s=0.3)) as (h, _):
        stored = time.monotonic()
        assert (await chat(h.client, temperature=0))[0] == "miss"
        assert (await chat(h.client, temperature=0))[0] == "hit"
        while (await chat(h.client, temperature=0))[0] == "hit":
            assert time.monotonic() - stored < 5, "the entry never expired"
            await asyncio.sleep(0.02)
        assert time.monotonic() - stored >= 0.3
        assert asked(h) == 2


async def test_the_byte_bound_evicts_the_least_recently_used_entry() -> None:
    async with gateway() as (h, _):
        _, body = await chat(h.client, temperature=0)
    room = (len(body) + 32 + replycache.ENTRY_OVERHEAD_BYTES) * 3 // 2  # one entry fits
    async with gateway(settings(max_bytes=room)) as (h, _):
        assert (await chat(h.client, temperature=0))[0] == "miss"
        assert (await chat(h.client, temperature=0))[0] == "hit"
        assert (await chat(h.client, temperature=0, seed=1))[0] == "miss"
        assert (await chat(h.client, temperature=0, seed=1))[0] == "hit"
        assert (await chat(h.client, temperature=0))[0] == "miss"
        assert asked(h) == 3


async def test_an_error_or_a_broken_reply_is_never_stored() -> None:
    async with gateway() as (h, seen), httpx.AsyncClient(base_url=h.url) as raw:
        no_messages = {"model": "qwen", "temperature": 0}
        refused = [(await raw.post("/chat/completions", json=no_messages)) for _ in range(2)]
        h.emulator.set_fault(faults.Fault(faults.FaultKind.MALFORMED, times=1), node=0)
        plain = {"model": "qwen", "temperature": 0, "messages": MESSAGES}
        broken = await raw.post("/chat/completions", json=plain)
        whole = await raw.post("/chat/completions", json=plain)
    assert [r.status_code for r in refused] == [400, 400]
    assert [len(r.attempts) for r in seen.seen[:2]] == [1, 1]
    assert broken.status_code == 200
    assert broken.headers[relaying.CACHE_HEADER] == "miss"
    assert whole.headers[relaying.CACHE_HEADER] == "miss"
    assert whole.content != broken.content
    assert asked(h) == 2


async def test_a_reply_over_the_entry_cap_is_not_stored() -> None:
    async with gateway(settings(max_entry_bytes=100)) as (h, _):
        assert [(await chat(h.client, temperature=0))[0] for _ in range(2)] == ["miss"] * 2
        assert asked(h) == 2
