"""``llmctl gateway`` enforcing keys, as operators run it: real processes over Postgres and
NATS, keys and prices made with the CLI, the official openai client and plain HTTP: a key is
needed, two replicas hold a key to its requests per minute together, spend survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

import migrations
from emulators import runner, vllm, vllm_node
from gateway import keystore
from runtimestate import database
from tests.e2e.test_cli_gateway import LLMCTL, MESSAGES, _seed
from tests.integration.gateway_harness import GENERATIVE
from tests.unit.test_resolver import backend, model


class Gateway:
    """A running ``llmctl gateway`` process; its standard error is read as it comes."""

    def __init__(self, child: asyncio.subprocess.Process, url: str, lines: list[str]) -> None:
        self.child, self.url, self.lines = child, url, lines

    async def stop(self) -> int:
        self.child.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.child.wait(), 10)


@contextlib.asynccontextmanager
async def gateway(db: str, *root: str) -> AsyncIterator[Gateway]:
    child = await asyncio.create_subprocess_exec(
        LLMCTL, "--database-url", db, *root, "gateway", "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stderr is not None
    lines: list[str] = []

    async def drain() -> None:
        assert child.stderr is not None
        async for line in child.stderr:
            lines.append(line.decode())

    try:
        first = (await asyncio.wait_for(child.stderr.readline(), 30)).decode()
        found = re.search(r"serving (http://\S+/v1) \(keys enforced\)", first)
        assert found, first
        reader = asyncio.create_task(drain())
        try:
            yield Gateway(child, found.group(1), lines)
        finally:
            reader.cancel()
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


@contextlib.asynccontextmanager
async def fleet(db: str) -> AsyncIterator[runner.Emulator[vllm_node.VllmNode]]:
    migrations.upgrade(db)
    async with vllm.running(served_model_names=["qwen"]) as emu:
        qwen = backend("vllm-a", model("qwen", 8192, caps=GENERATIVE), type_="vllm",
                       base_url=emu.node_url(0))  # fmt: skip
        await _seed(db, {"vllm-a": emu.node_url(0)}, [qwen])
        yield emu


async def cli_run(db: str, *args: str) -> str:
    """``llmctl ARGS`` on ``db`` (the real command); its standard output (it must succeed)."""
    child = await asyncio.create_subprocess_exec(
        LLMCTL, "--database-url", db, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, err.decode()
    return out.decode()


async def create_key(db: str, name: str, *options: str) -> str:
    return (await cli_run(db, "key", "create", name, *options)).splitlines()[1]


async def _post(client: httpx.AsyncClient, url: str, secret: str | None) -> httpx.Response:
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    body = {"model": "qwen", "messages": MESSAGES, "max_tokens": 4}
    return await client.post(f"{url}/chat/completions", json=body, headers=headers)


async def test_a_request_needs_a_key_made_with_llmctl_key_create(postgres_url: str) -> None:
    async with fleet(postgres_url), gateway(postgres_url) as gw, httpx.AsyncClient() as client:
        deadline = time.monotonic() + 5
        while not any("no keys yet" in line for line in gw.lines):
            assert time.monotonic() < deadline, gw.lines
            await asyncio.sleep(0.02)
        assert "make one with: llmctl key create NAME" in "".join(gw.lines)
        refused = await _post(client, gw.url, None)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        secret = await create_key(postgres_url, "alice")
        deadline = time.monotonic() + 5
        while (await _post(client, gw.url, secret)).status_code != 200:
            assert time.monotonic() < deadline, "a new key was not admitted within 5 s"
            await asyncio.sleep(0.05)
        assert (await _post(client, gw.url, "llmk-" + secret[5:][::-1])).status_code == 401
        assert await gw.stop() == 0
    assert secret not in "".join(gw.lines)


async def test_spend_survives_a_gateway_restart_and_the_budget_still_holds(
    postgres_url: str,
) -> None:
    async with fleet(postgres_url):
        await cli_run(
            postgres_url, "price", "set", "qwen", "--prompt-usd", "1", "--completion-usd", "1"
        )
        secret = await create_key(postgres_url, "alice", "--budget", "0.00001")
        async with gateway(postgres_url) as first:
            client = openai.AsyncOpenAI(base_url=first.url, api_key=secret, max_retries=0)
            reply = await client.chat.completions.create(model="qwen", messages=MESSAGES)
            assert reply.usage is not None
            spent = reply.usage.total_tokens  # micro-USD at 1 USD per million tokens
            assert spent >= 10
            assert await first.stop() == 0
        assert await _spent(postgres_url, "alice") == spent * 10**6
        async with gateway(postgres_url) as second:
            client = openai.AsyncOpenAI(base_url=second.url, api_key=secret, max_retries=0)
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(model="qwen", messages=MESSAGES)
        assert refused.value.code == "insufficient_quota"
        assert refused.value.message.endswith("key alice has spent its budget of 0.00001 USD")
        assert refused.value.response.headers["x-should-retry"] == "false"


async def _spent(db: str, name: str) -> int:
    engine = database.create_async_engine(db)
    try:
        async with database.session_factory(engine)() as session:
            key = await keystore.get(session, name)
            return await keystore.spent(session, key.id, "all")
    finally:
        await engine.dispose()


RATE_PER_S = 20  # 1,200 per minute
RPM = 600


async def test_two_replicas_hold_a_key_to_its_requests_per_minute_together(
    postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    async with fleet(postgres_url):
        secret = await create_key(postgres_url, "alice", "--rpm", str(RPM))
        root = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
        async with (
            gateway(postgres_url, *root) as a,
            gateway(postgres_url, *root) as b,
            httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client,
        ):
            answers = await _drive(client, (a.url, b.url), secret, 60 * RATE_PER_S)
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) == {200, 429}, statuses
    assert RPM <= statuses[200] <= RPM * 105 // 100, statuses
    limited = [r for r in answers if r.status_code == 429]
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in limited)
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in limited)


async def _drive(
    client: httpx.AsyncClient, urls: tuple[str, str], secret: str, count: int
) -> list[httpx.Response]:
    """``count`` requests at RATE_PER_S, paced by the clock, alternating between replicas."""
    start = time.monotonic()
    sent: list[asyncio.Task[httpx.Response]] = []
    for i in range(count):
        delay = start + i / RATE_PER_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for a result
        sent.append(asyncio.create_task(_post(client, urls[i % 2], secret)))
    return list(await asyncio.gather(*sent))
