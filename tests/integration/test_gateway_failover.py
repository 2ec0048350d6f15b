"""Failover through the gateway: before the first byte the next provider answers; after it, the
stream ends with OpenAI's error event; every attempt is counted and its outcome recorded."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators import faults
from gateway import application, forwarding
from runtimestate import resolver
from tests.integration import gateway_harness
from tests.integration.gateway_harness import GENERATIVE, declared
from tests.unit.test_resolver import backend, fleet, model

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
QWEN = resolver.Request(models=("qwen",), capability="chat")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_with_one_of_two_nodes_refusing_connections_no_request_fails() -> None:
    async with gateway_harness.running(nodes=1) as h:
        # The live node looks busier, so least_loaded tries the dead one first every time
        # until its breaker opens.
        live = backend(
            "vllm-0",
            model("qwen", 8192, caps=GENERATIVE),
            type_="vllm",
            base_url=h.emulator.node_url(0),
            running=10,
        )
        dead = backend(
            "vllm-dead",
            model("qwen", 8192, caps=GENERATIVE),
            type_="vllm",
            base_url=f"http://127.0.0.1:{_closed_port()}",
        )
        both = [live, dead]
        r = resolver.Resolver.from_snapshot(fleet(*both), desired=declared(both))
        async with gateway_harness.serving(r) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            for _ in range(10):
                reply = await client.chat.completions.create(model="qwen", messages=MESSAGES)
                assert reply.choices[0].message.content
            await client.close()
        assert h.emulator.nodes[0].counters["success_stop"] == 10
        # Its failures were recorded: the breaker opened within three and keeps it away.
        assert [e.backend for e in r.resolve(QWEN).excluded] == ["vllm-dead"]
        assert r.resolve(QWEN).excluded[0].reason is resolver.Reason.COOLING_DOWN


async def test_a_node_answering_500_is_failed_over_for_plain_and_streamed_chats() -> None:
    async with gateway_harness.running(nodes=2) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500), node=1)
        for _ in range(4):
            reply = await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
            assert reply.choices[0].message.content
            stream = await h.client.chat.completions.create(
                model="qwen", messages=MESSAGES, stream=True
            )
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert h.emulator.nodes[0].counters["success_stop"] == 8


async def test_a_stream_reset_before_its_first_byte_fails_over() -> None:
    async with gateway_harness.running(nodes=2) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.RESET, after_lines=0), node=0)
        for _ in range(4):
            stream = await h.client.chat.completions.create(
                model="qwen", messages=MESSAGES, stream=True
            )
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def test_a_stream_broken_after_its_first_byte_ends_with_an_error_event() -> None:
    async with gateway_harness.running(nodes=2) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.RESET, after_lines=3))
        stream = await h.client.chat.completions.create(
            model="qwen", messages=MESSAGES, stream=True
        )
        received: list[object] = []

        async def read_all() -> None:
            async for chunk in stream:
                received.append(chunk)

        with pytest.raises(openai.APIError, match="broke off after it started") as caught:
            await read_all()
        assert received  # the first events reached the client ...
        assert caught.value.type == "server_error"
        # ... so nothing was retried: one node saw the request, the other none.
        assert sorted(n.counters["success_stop"] for n in h.emulator.nodes) == [0, 1]


async def test_every_node_rate_limited_gives_429_with_retry_after() -> None:
    async with gateway_harness.running(nodes=2) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_429))
        with pytest.raises(openai.RateLimitError) as caught:
            await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.code == "rate_limit_exceeded"


async def test_nodes_that_never_answer_give_504_at_the_deadline() -> None:
    quick = application.Settings(limits=forwarding.Limits(attempts=3, deadline_s=0.3))
    async with gateway_harness.running(nodes=2, settings=quick) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HANG))
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
        assert caught.value.status_code == 504
        assert time.monotonic() - started < 2


async def test_a_client_that_disconnects_cancels_the_upstream_request() -> None:
    async with gateway_harness.running(nodes=2) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HANG))
        providers = list(h.resolver.resolve(QWEN).providers())
        body = {"model": "qwen", "messages": MESSAGES}
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.3)) as client:
            task = asyncio.ensure_future(client.post(f"{h.url}/chat/completions", json=body))
            deadline = time.monotonic() + 5
            while not any(h.resolver.inflight(p) for p in providers):
                assert time.monotonic() < deadline, "the request never reached a provider"
                await asyncio.sleep(0.01)
            with pytest.raises(httpx.ReadTimeout):
                await task  # the client gives up and closes its connection
        deadline = time.monotonic() + 5
        while any(h.resolver.inflight(p) for p in providers):
            assert time.monotonic() < deadline, "the upstream request outlived its client"
            await asyncio.sleep(0.01)


async def test_one_of_three_nodes_dying_under_concurrent_load_fails_no_request() -> None:
    # Replies take 20 ms and 24 requests run at once, so the healthy nodes have requests in
    # flight, as under real load: least_loaded weighs the dying node's errors x10 and keeps
    # choosing it only while the others are busier, until its breaker opens.
    async with gateway_harness.running(nodes=3, ttft=0.02) as h:

        async def chat() -> str | None:
            reply = await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
            return reply.choices[0].message.content

        before = await asyncio.gather(*(chat() for _ in range(12)))
        assert all(before)
        assert all(n.counters["success_stop"] > 0 for n in h.emulator.nodes)  # load spread
        h.emulator.set_fault(faults.Fault(faults.FaultKind.RESET, times=_MANY), node=2)  # dies
        for _ in range(4):
            assert all(await asyncio.gather(*(chat() for _ in range(24))))
        excluded = h.resolver.resolve(QWEN).excluded
        assert [(e.backend, e.reason) for e in excluded] == [
            ("vllm-2", resolver.Reason.COOLING_DOWN)
        ]
        opened_after = _hits(h, 2)
        assert all(await asyncio.gather(*(chat() for _ in range(24))))
        assert _hits(h, 2) == opened_after  # once open, the dead node gets no more requests


_MANY = 10_000


def _hits(h: gateway_harness.Harness, node: int) -> int:
    """How many requests node ``node``'s RESET fault (armed `_MANY` times) has hit."""
    [armed] = h.emulator.nodes[node].faults.to_dict()["*"]
    return _MANY - int(armed["times"])


async def test_a_dead_node_gets_at_most_three_requests_however_many_follow() -> None:
    async with gateway_harness.running(nodes=3) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.RESET, times=_MANY), node=2)
        for _ in range(60):  # one at a time: each failure is recorded before the next request
            reply = await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
            assert reply.choices[0].message.content
        # The breaker opens at the third failure in a row; the policy may avoid the failing
        # node sooner (its error rate counts against it), never later.
        assert 1 <= _hits(h, 2) <= 3
