"""The gateway's canonical log line: one ``gateway.request`` event per request, never with the
prompt, the reply or the key's secret; and the setting that turns it off."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import openai
import pytest
import structlog
from openai.types.chat import ChatCompletionMessageParam

from controller import gatewayobservers
from emulators import faults
from gateway import access, envelopes, exchange, keys
from tests.integration import gateway_harness

PROMPT_MARKER = "zebra-quartz-prompt-7731"
KEY_MARKER = "walrus-onyx-secret-4410"
SECRET = f"llmk-AbCdEf{KEY_MARKER}"  # the marker lies past the key's display prefix
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": f"Say something about {PROMPT_MARKER}."}
]
TEAM_KEY = keys.Key(
    id=7,
    spec=keys.KeySpec(name="team-a"),
    secret_sha256=keys.digest(SECRET),
    prefix=keys.prefix(SECRET),
    created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
)


class _TeamKey(access.Open):
    """A key hook that knows one key, as the key store plugs in (`access.Keys`)."""

    async def admit(self, token: str | None, model: str) -> access.Grant:
        if token != SECRET:
            raise envelopes.Refusal(401, "invalid API key", code="invalid_api_key")
        return access.Grant(TEAM_KEY)


def _lines(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in captured if e["event"] == "gateway.request"]


async def _logged(captured: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The request lines once ``count`` are there (a handler notifies its observers just
    after the client has the reply's last byte)."""
    deadline = time.monotonic() + 5
    while len(_lines(captured)) < count:
        assert time.monotonic() < deadline, captured
        await asyncio.sleep(0.01)
    return _lines(captured)


async def _chat(url: str, **extra: Any) -> None:
    client = openai.AsyncOpenAI(base_url=url, api_key=SECRET, max_retries=0)
    try:
        reply = await client.chat.completions.create(model="qwen", messages=MESSAGES, **extra)
        if extra.get("stream"):
            [_ async for _ in reply]  # type: ignore[union-attr]
    finally:
        await client.close()


async def test_each_request_logs_one_line_without_its_prompt_reply_or_key_secret() -> None:
    async with gateway_harness.running(nodes=2) as h:
        watch = gatewayobservers.build(h.resolver, request_log=True, exporters=())
        for node in range(2):  # each node fails its first request: the first chat fails over
            h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500, times=1), node=node)
        async with gateway_harness.serving(
            h.resolver, keys=_TeamKey(), observers=watch.observers
        ) as url:
            with structlog.testing.capture_logs() as captured:
                with pytest.raises(openai.InternalServerError):
                    await _chat(url)
                await _chat(url)
                await _chat(url, stream=True)
                failed, plain, streamed = await _logged(captured, 3)
    assert (failed["status"], failed["error"], failed["error_type"]) == (
        502,
        "upstream",
        "server_error",
    )
    assert (failed["attempts"], failed["failovers"]) == (2, 1)
    assert sorted(failed["tried"].split(",")) == ["vllm-0:http_5xx", "vllm-1:http_5xx"]
    assert plain["log_level"] == "info"
    assert plain["endpoint"] == "/v1/chat/completions"
    assert (plain["model"], plain["status"], plain["error"]) == ("qwen", 200, None)
    assert plain["backend"] in {"vllm-0", "vllm-1"}
    assert (plain["attempts"], plain["failovers"]) == (1, 0)
    assert plain["key"] == "team-a"
    assert plain["prompt_tokens"] > 0
    assert plain["completion_tokens"] > 0
    assert 0 < plain["ttft_ms"] <= plain["duration_ms"]
    assert streamed["stream"] is True
    assert streamed["completion_tokens"] > 0
    everything = repr(captured)
    assert PROMPT_MARKER not in everything
    assert KEY_MARKER not in everything
    assert "reply from the llmctl" not in everything  # what the emulator answers


async def test_a_refused_request_logs_its_error_class_and_type() -> None:
    async with gateway_harness.running(nodes=1) as h:
        watch = gatewayobservers.build(h.resolver, request_log=True, exporters=())
        async with gateway_harness.serving(h.resolver, observers=watch.observers) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key=SECRET, max_retries=0)
            with structlog.testing.capture_logs() as captured:
                with pytest.raises(openai.NotFoundError):
                    await client.chat.completions.create(model="nope", messages=MESSAGES)
                [line] = await _logged(captured, 1)
            await client.close()
    assert (line["status"], line["error"], line["error_type"]) == (
        404,
        "refused",
        "not_found_error",
    )
    assert (line["backend"], line["attempts"], line["key"]) == (None, 0, None)


class _Finished:
    """Counts finished exchanges: the sign that every observer has had the request."""

    def __init__(self) -> None:
        self.count = 0

    def finished(self, record: exchange.Exchange) -> None:
        self.count += 1


async def test_the_request_log_can_be_turned_off() -> None:
    async with gateway_harness.running(nodes=1) as h:
        watch = gatewayobservers.build(h.resolver, request_log=False, exporters=())
        done = _Finished()
        observers = (*watch.observers, done)
        async with gateway_harness.serving(h.resolver, observers=observers) as url:
            with structlog.testing.capture_logs() as captured:
                await _chat(url)
                deadline = time.monotonic() + 5
                while not done.count:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
    assert _lines(captured) == []
