"""The gateway's Prometheus metrics on ``GET /metrics``, as a scraper reads them, after real
requests from the official openai client through the gateway to emulated vLLM nodes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client import parser

from emulators import faults
from gateway import access, envelopes, exchangelabels, gatewaymetrics
from tests.integration import gateway_harness

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Why is the sky blue?"}]
CHAT = "/v1/chat/completions"


class _Scrape:
    """The samples of one scrape, looked up by name and a subset of labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for f in parser.text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


@contextlib.asynccontextmanager
async def _metered(
    h: gateway_harness.Harness, keys: access.Keys | None = None
) -> AsyncIterator[tuple[openai.AsyncOpenAI, str]]:
    """A gateway over ``h``'s fleet counting into fresh metrics; yields a client and the
    ``/metrics`` URL."""
    metrics = gatewaymetrics.GatewayMetrics(exchangelabels.FleetModels(h.resolver))
    async with gateway_harness.serving(
        h.resolver, keys=keys, observers=(metrics,), metrics=metrics.render
    ) as url:
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
        try:
            yield client, url.removesuffix("/v1") + "/metrics"
        finally:
            await client.close()


async def _scrape(url: str, answered: int) -> _Scrape:
    """The metrics once ``answered`` requests are counted (a handler notifies its observers
    just after the client has the reply's last byte)."""
    deadline = time.monotonic() + 5
    async with httpx.AsyncClient() as client:
        while True:
            response = await client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            scrape = _Scrape(response.text)
            if scrape.value("llmctl_gateway_requests_total") >= answered:
                return scrape
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.01)


async def test_metrics_count_requests_tokens_and_latencies_per_model_and_backend() -> None:
    async with gateway_harness.running(nodes=1) as h, _metered(h) as (client, metrics_url):
        reply = await client.chat.completions.create(model="qwen", messages=MESSAGES)
        stream = await client.chat.completions.create(model="qwen", messages=MESSAGES, stream=True)
        streamed = [c async for c in stream]
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="no-such-model-xyz", messages=MESSAGES)
        scrape = await _scrape(metrics_url, 3)
    served = {"endpoint": CHAT, "model": "qwen", "backend": "vllm-0"}
    assert scrape.value("llmctl_gateway_requests_total", **served, status="2xx") == 2
    assert scrape.value("llmctl_gateway_request_duration_seconds_count", **served) == 2
    assert scrape.value("llmctl_gateway_time_to_first_token_seconds_count", **served) == 2
    assert reply.usage is not None
    output = reply.usage.completion_tokens + sum(1 for c in streamed if c.choices[0].delta.content)
    tokens = {"model": "qwen", "backend": "vllm-0"}
    assert scrape.value("llmctl_gateway_tokens_total", **tokens, direction="output") == output
    assert scrape.value("llmctl_gateway_tokens_total", **tokens, direction="input") > 0
    assert scrape.value("llmctl_gateway_attempts_total", **tokens, outcome="ok") == 2
    unknown = {"endpoint": CHAT, "model": exchangelabels.UNKNOWN_MODEL}
    assert scrape.value("llmctl_gateway_requests_total", **unknown, status="4xx") == 1
    assert (
        scrape.value(
            "llmctl_gateway_errors_total", **unknown, **{"class": "refused"}, type="not_found_error"
        )
        == 1
    )
    assert "no-such-model-xyz" not in scrape.text  # client input never becomes a label


async def test_a_failed_over_request_counts_its_failed_attempts_and_the_failover() -> None:
    async with gateway_harness.running(nodes=2) as h, _metered(h) as (client, metrics_url):
        for node in (0, 1):
            h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500), node=node)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="qwen", messages=MESSAGES)
        scrape = await _scrape(metrics_url, 1)
    assert scrape.value("llmctl_gateway_failovers_total", endpoint=CHAT, model="qwen") == 1
    for backend in ("vllm-0", "vllm-1"):
        assert (
            scrape.value("llmctl_gateway_attempts_total", backend=backend, outcome="http_5xx") == 1
        )
    assert scrape.value("llmctl_gateway_errors_total", **{"class": "upstream"}) == 1
    assert scrape.value("llmctl_gateway_requests_total", model="qwen", status="5xx") == 1


class _OverLimit(access.Open):
    """A key hook that refuses every request over its (zero) rate limit, as a key store does."""

    async def admit(self, token: str | None, model: str) -> access.Grant:
        raise envelopes.Refusal(
            429,
            "key over its requests per minute",
            "rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": "7"},
        )


async def test_a_request_the_gateway_limits_counts_as_limited_and_a_provider_429_does_not() -> None:
    async with gateway_harness.running(nodes=1) as h:
        async with _metered(h, keys=_OverLimit()) as (client, metrics_url):
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="qwen", messages=MESSAGES)
            limited = await _scrape(metrics_url, 1)
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_429))
        async with _metered(h) as (client, metrics_url):
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="qwen", messages=MESSAGES)
            upstream = await _scrape(metrics_url, 1)
    assert limited.value("llmctl_gateway_limited_requests_total", model="qwen") == 1
    assert limited.value("llmctl_gateway_attempts_total") == 0
    assert upstream.value("llmctl_gateway_limited_requests_total") == 0
    assert upstream.value("llmctl_gateway_attempts_total", outcome="http_429") == 1


async def test_a_stream_cut_after_its_first_byte_counts_as_interrupted() -> None:
    interrupted = {"class": "stream_interrupted", "type": "stream_interrupted"}
    async with gateway_harness.running(nodes=1) as h, _metered(h) as (client, metrics_url):
        h.emulator.set_fault(faults.Fault(faults.FaultKind.RESET, after_lines=2))
        stream = await client.chat.completions.create(model="qwen", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            [_ async for _ in stream]
        scrape = await _scrape(metrics_url, 1)
    assert scrape.value("llmctl_gateway_errors_total", model="qwen", **interrupted) == 1
    assert scrape.value("llmctl_gateway_attempts_total", outcome="interrupted") == 1


async def test_cache_hits_and_misses_are_counted() -> None:
    async with gateway_harness.running(nodes=1) as h, _metered(h) as (client, metrics_url):
        for _ in range(2):
            await client.chat.completions.create(model="qwen", messages=MESSAGES, temperature=0)
        scrape = await _scrape(metrics_url, 2)
    lookups = {"endpoint": CHAT, "model": "qwen"}
    assert scrape.value("llmctl_gateway_cache_lookups_total", **lookups, result="miss") == 1
    assert scrape.value("llmctl_gateway_cache_lookups_total", **lookups, result="hit") == 1
    assert scrape.value("llmctl_gateway_requests_total", **lookups, backend="(none)") == 1
    assert scrape.value("llmctl_gateway_attempts_total") == 1  # the hit asked no provider
