"""Keys enforced by the gateway (`gateway.enforcement`) over real Postgres, in-process: who
gets 401 and 403, tokens per minute, budgets and spend, and the routing headers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import migrations
from emulators import runner, vllm, vllm_node
from gateway import enforcement, keys, keystore, prices, pricestore
from runtimestate import database, desired, resolver
from runtimestate.desired import spec
from tests.integration import gateway_harness
from tests.unit.test_resolver import fleet

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Why is the sky blue?"}]
T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
SYNC_S = 0.05


@dataclasses.dataclass
class World:
    db: str
    url: str
    emulator: runner.Emulator[vllm_node.VllmNode]
    enforced: enforcement.Enforcement

    def client(self, secret: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url, api_key=secret, max_retries=0)


async def _store(url: str, *values: keys.KeySpec) -> list[str]:
    """Create keys; their secrets."""
    engine = database.create_async_engine(url)
    secrets = []
    try:
        async with database.session_factory(engine)() as session, session.begin():
            for value in values:
                secret = keys.new_secret()
                await keystore.create(session, value, keys.digest(secret), secret[:11], T0)
                secrets.append(secret)
    finally:
        await engine.dispose()
    return secrets


async def _run(url: str, work: object) -> None:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await work(session)  # type: ignore[operator]
    finally:
        await engine.dispose()


@pytest.fixture
def db(postgres_url: str) -> str:
    migrations.upgrade(postgres_url)
    return postgres_url


@contextlib.asynccontextmanager
async def world(db: str) -> AsyncIterator[World]:
    async with vllm.running(served_model_names=["qwen"], nodes=2) as emu:
        states = gateway_harness.states(emu, "qwen", gateway_harness.GENERATIVE)
        backends = gateway_harness.declared(states).backends
        pool = spec.Pool(spec.PoolSpec("default", models=("qwen",)), gateway_harness.META)
        state = desired.DesiredState(backends=backends, models=(), pools=(pool,))
        r = resolver.Resolver.from_snapshot(fleet(*states), desired=state)
        enforced = await enforcement.enforce(db, r.desired_state, sync_s=SYNC_S)
        try:
            gate = enforced.gate
            async with gateway_harness.serving(r, keys=gate, observers=[gate]) as url:
                yield World(db, url, emu, enforced)
        finally:
            await enforced.aclose()


async def _until(check: object, what: str, within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_missing_unknown_or_revoked_key_gets_401_and_a_revocation_shows_in_seconds(
    db: str,
) -> None:
    [secret] = await _store(db, keys.KeySpec("alice"))
    async with world(db) as w:
        reply = await w.client(secret).chat.completions.create(model="qwen", messages=MESSAGES)
        assert reply.choices[0].message.content
        for token in ("llmk-not-a-key", "sk-something-else"):
            with pytest.raises(openai.AuthenticationError) as refused:
                await w.client(token).chat.completions.create(model="qwen", messages=MESSAGES)
            assert refused.value.code == "invalid_api_key"
            assert "llmctl key create" in refused.value.message
            assert token not in refused.value.message
        async with httpx.AsyncClient() as raw:
            answer = await raw.post(f"{w.url}/chat/completions", json={"model": "qwen"})
        assert answer.status_code == 401
        assert answer.json()["error"]["message"].startswith("no API key was sent")
        await _run(db, lambda s: keystore.revoke(s, "alice", T0))

        async def refused_now() -> bool:
            try:
                await w.client(secret).chat.completions.create(model="qwen", messages=MESSAGES)
            except openai.AuthenticationError:
                return True
            return False

        await _until(refused_now, "the revoked key was still admitted after 3 s")
    assert sum(n.counters["success_stop"] for n in w.emulator.nodes) >= 1


async def test_a_model_outside_the_keys_models_and_pools_gets_403(db: str) -> None:
    narrow, pooled = await _store(
        db, keys.KeySpec("narrow", models=("llama3",)), keys.KeySpec("pooled", pools=("default",))
    )
    async with world(db) as w:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await w.client(narrow).chat.completions.create(model="qwen", messages=MESSAGES)
        assert "key narrow may not use model 'qwen'" in refused.value.message
        reply = await w.client(pooled).chat.completions.create(model="qwen", messages=MESSAGES)
        assert reply.choices[0].message.content


async def test_the_model_list_needs_a_key_and_shows_only_what_the_key_may_use(db: str) -> None:
    narrow, pooled = await _store(
        db, keys.KeySpec("narrow", models=("llama3",)), keys.KeySpec("pooled", pools=("default",))
    )
    async with world(db) as w:
        assert [m.id async for m in w.client(pooled).models.list()] == ["qwen"]
        assert [m.id async for m in w.client(narrow).models.list()] == []
        with pytest.raises(openai.AuthenticationError):
            await w.client("llmk-not-a-key").models.list()


async def test_a_key_over_its_tokens_per_minute_gets_429_with_retry_after(db: str) -> None:
    [secret] = await _store(db, keys.KeySpec("alice", tpm=5))
    async with world(db) as w:
        client = w.client(secret)
        stream = await client.chat.completions.create(model="qwen", messages=MESSAGES, stream=True)
        assert [c async for c in stream]

        answers: list[httpx.Response] = []

        async def limited() -> bool:  # the stream's usage is counted once its exchange ended
            answers.append(await _post(w.url, secret))
            return answers[-1].status_code == 429

        await _until(limited, "a key over its tpm was still admitted")
    error = answers[-1].json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "key alice is over its limit of 5 tokens per minute" in error["message"]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60


async def _post(url: str, secret: str) -> httpx.Response:
    async with httpx.AsyncClient() as raw:
        return await raw.post(
            f"{url}/chat/completions",
            json={"model": "qwen", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {secret}"},
        )


async def test_a_spent_budget_stops_the_key_clearly_and_holds_after_a_restart(db: str) -> None:
    [secret] = await _store(db, keys.KeySpec("alice", budget_microusd=1, period=keys.Period.DAY))
    await _run(db, lambda s: pricestore.set_price(s, prices.Price("qwen", 10**6, 10**6), T0))
    async with world(db) as w:
        client = w.client(secret)
        await client.chat.completions.create(model="qwen", messages=MESSAGES)
        answer = await _post(w.url, secret)
    assert answer.status_code == 429
    error = answer.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert "key alice has spent its day budget of 0.000001 USD; it resets at" in error["message"]
    assert answer.headers["x-should-retry"] == "false"
    assert 1 <= int(answer.headers["Retry-After"]) <= 86400
    engine = database.create_async_engine(db)
    try:
        async with database.session_factory(engine)() as session:
            key = await keystore.get(session, "alice")
            period = T0.now(dt.UTC).strftime("%Y-%m-%d")
            assert await keystore.spent(session, key.id, period) >= 10**6
    finally:
        await engine.dispose()
    async with world(db) as again:
        with pytest.raises(openai.RateLimitError) as refused:
            await again.client(secret).chat.completions.create(model="qwen", messages=MESSAGES)
        assert refused.value.code == "insufficient_quota"


async def test_the_policy_and_session_headers_route_and_a_bad_policy_gets_400(db: str) -> None:
    plain, sticky = await _store(db, keys.KeySpec("plain"), keys.KeySpec("sticky", policy="sticky"))
    async with world(db) as w:
        with pytest.raises(openai.BadRequestError) as refused:
            await w.client(plain).chat.completions.create(
                model="qwen", messages=MESSAGES, extra_headers={"X-Llmctl-Policy": "fastest"}
            )
        assert "X-Llmctl-Policy 'fastest' is not one of random|round_robin|" in str(refused.value)
        with pytest.raises(openai.BadRequestError) as refused:
            await w.client(sticky).chat.completions.create(model="qwen", messages=MESSAGES)
        assert "send X-Llmctl-Session" in refused.value.message
        for _ in range(8):
            await w.client(sticky).chat.completions.create(
                model="qwen", messages=MESSAGES, extra_headers={"X-Llmctl-Session": "chat-42"}
            )
        served = sorted(n.counters["success_stop"] for n in w.emulator.nodes)
        assert served == [0, 8]
        for _ in range(8):
            await w.client(plain).chat.completions.create(
                model="qwen", messages=MESSAGES, extra_headers={"X-Llmctl-Policy": "round_robin"}
            )
        served = sorted(n.counters["success_stop"] for n in w.emulator.nodes)
        assert served == [4, 12]


async def test_without_nats_counts_that_left_the_window_are_dropped(db: str) -> None:
    async with world(db) as w:
        limiter = w.enforced.gate.limiter
        old = time.time() - 120
        limiter.record("9:rpm", old)
        assert "9:rpm" in limiter.report(old)

        async def dropped() -> bool:
            return "9:rpm" not in limiter.report(old)

        await _until(dropped, "an old count was never dropped")
