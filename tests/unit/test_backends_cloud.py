"""The OpenAI-compatible and Gemini adapters against `httpx.MockTransport`: listing,
pagination, capability and context mapping, authentication headers, failure mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from runtimestate import errors
from runtimestate.backends import base, gemini, openai

FAST = base.Timeouts(connect=0.3, read=0.3, stall=0.3, total=0.3)
# Answers from the mock transport never wait: a deadline they could meet only on an idle
# machine would make the tests flaky, so only the timeout test uses FAST.
ROOMY = base.Timeouts(connect=10, read=10, stall=10, total=10)


class Recorder:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def _openai(recorder: Recorder, **kwargs: Any) -> openai.OpenAIBackend:
    kwargs.setdefault("timeouts", ROOMY)
    return openai.OpenAIBackend(
        "https://api.example.com/v1",
        name="cloud",
        transport_=httpx.MockTransport(recorder),
        **kwargs,
    )


OPENAI_LIST = {
    "object": "list",
    "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "system"},
        {"id": "text-embedding-3-small", "object": "model", "created": 1, "owned_by": "system"},
        {"id": "llama-3.1-8b", "object": "model", "context_window": 131072},
        {"id": "mistral", "object": "model", "context_length": 32768},
    ],
}


async def test_openai_lists_models_with_a_bearer_key_under_the_base_path() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=OPENAI_LIST))
    async with _openai(recorder, api_key="sk-test") as adapter:
        observation = await adapter.observe()
    request = recorder.requests[0]
    assert (request.method, request.url.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == "Bearer sk-test"
    chat, embed, llama, mistral = observation.models
    assert chat.capabilities == {"chat", "prompt", "stream"}
    assert embed.capabilities == {"embed"}
    assert (chat.context_length, llama.context_length, mistral.context_length) == (
        None,
        131072,
        32768,
    )
    assert not chat.loaded
    assert await adapter.version() is None


async def test_openai_without_a_key_sends_no_authorization_header() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=OPENAI_LIST))
    async with _openai(recorder) as adapter:
        assert await adapter.health() is True
    assert "authorization" not in recorder.requests[0].headers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(401, json={"error": {"message": "Incorrect API key provided: sk-t***"}}),
            errors.Unauthorized,
        ),
        (httpx.Response(429, json={"error": {"message": "Rate limit"}}), errors.BackendUnavailable),
        (httpx.Response(500, json={"error": {"message": "oops"}}), errors.ServerError),
        (httpx.Response(200, content=b"<html>"), errors.ProtocolError),
        (httpx.Response(200, json={"data": None}), errors.ProtocolError),
        (httpx.Response(200, json={"object": "list"}), errors.ProtocolError),
        (httpx.Response(200, json={"data": [{"object": "model"}]}), errors.ProtocolError),
    ],
)
async def test_openai_maps_failures(answer: httpx.Response, expected: type[Exception]) -> None:
    async with _openai(Recorder(lambda _: answer)) as adapter:
        with pytest.raises(expected):
            await adapter.observe()


def _gemini_model(name: str, methods: list[str], limit: int) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "001",
        "displayName": name,
        "inputTokenLimit": limit,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": methods,
    }


PAGES = {
    "": {
        "models": [_gemini_model("gemini-2.0-flash", ["generateContent", "countTokens"], 1048576)],
        "nextPageToken": "page-2",
    },
    "page-2": {
        "models": [_gemini_model("text-embedding-004", ["embedContent"], 2048)],
        "nextPageToken": "page-3",
    },
    "page-3": {"models": [_gemini_model("aqa", ["generateAnswer"], 7168)]},
}


def _paged(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=PAGES[request.url.params.get("pageToken", "")])


def _gemini(
    recorder: Recorder,
    base_url: str = gemini.DEFAULT_BASE_URL,
    timeouts: base.Timeouts = ROOMY,
) -> gemini.GeminiBackend:
    return gemini.GeminiBackend(
        base_url,
        name="gemini",
        api_key="AIza-secret",
        timeouts=timeouts,
        transport_=httpx.MockTransport(recorder),
    )


async def test_gemini_follows_page_tokens_until_the_last_page() -> None:
    recorder = Recorder(_paged)
    async with _gemini(recorder) as adapter:
        observation = await adapter.observe()
    assert [m.name for m in observation.models] == ["gemini-2.0-flash", "text-embedding-004", "aqa"]
    assert [r.url.params.get("pageToken") for r in recorder.requests] == [None, "page-2", "page-3"]
    assert all(r.url.path == "/v1beta/models" for r in recorder.requests)
    assert all(r.headers["x-goog-api-key"] == "AIza-secret" for r in recorder.requests)
    assert all("AIza" not in str(r.url) for r in recorder.requests)


async def test_gemini_maps_context_and_capabilities() -> None:
    async with _gemini(Recorder(_paged)) as adapter:
        flash, embedding, aqa = (await adapter.observe()).models
    assert (flash.context_length, flash.model) == (1048576, "models/gemini-2.0-flash")
    assert flash.capabilities == {"chat", "prompt", "stream"}
    assert flash.backend_capabilities == {"generateContent", "countTokens"}
    assert embedding.capabilities == {"embed"}
    assert embedding.context_length == 2048
    assert aqa.capabilities == frozenset()


async def test_gemini_uses_a_version_segment_already_in_the_base_url() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json={"models": []}))
    async with _gemini(recorder, "http://127.0.0.1:9/proxy/v1beta") as adapter:
        observation = await adapter.observe()
    assert observation.models == ()
    assert recorder.requests[0].url.path == "/proxy/v1beta/models"


async def test_gemini_refuses_a_page_token_that_repeats() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json={"models": [], "nextPageToken": "same"}))
    async with _gemini(recorder) as adapter:
        with pytest.raises(errors.ProtocolError):
            await adapter.observe()
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(
                400,
                json={
                    "error": {
                        "code": 400,
                        "message": "API key not valid.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
            ),
            errors.Unauthorized,
        ),
        (httpx.Response(400, json={"error": {"message": "bad pageSize"}}), errors.RequestRejected),
        (
            httpx.Response(
                403,
                json={"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}},
            ),
            errors.Unauthorized,
        ),
        (
            httpx.Response(503, json={"error": {"code": 503, "message": "overloaded"}}),
            errors.BackendUnavailable,
        ),
        (
            httpx.Response(200, json={"models": [{"name": "models/x", "inputTokenLimit": "big"}]}),
            errors.ProtocolError,
        ),
        (httpx.Response(200, json={"models": [{"displayName": "no name"}]}), errors.ProtocolError),
    ],
)
async def test_gemini_maps_failures(answer: httpx.Response, expected: type[Exception]) -> None:
    async with _gemini(Recorder(lambda _: answer)) as adapter:
        with pytest.raises(expected) as caught:
            await adapter.observe()
    assert "AIza-secret" not in str(caught.value)


async def test_a_hung_provider_costs_at_most_the_total_timeout() -> None:
    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    started = time.monotonic()
    hung = (_openai(Recorder(hang), timeouts=FAST), _gemini(Recorder(hang), timeouts=FAST))  # type: ignore[arg-type]
    for adapter in hung:
        async with adapter:
            with pytest.raises(errors.BackendTimedOut):
                await adapter.observe()
    assert time.monotonic() - started < 2 * FAST.total + 0.3


@pytest.mark.parametrize("error", [KeyError("context_window"), TypeError("bad"), ValueError("x")])
async def test_a_bug_in_the_openai_parser_propagates_as_itself_not_as_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(_: object) -> int | None:
        raise error

    monkeypatch.setattr(openai, "_context", broken)
    async with _openai(Recorder(lambda _: httpx.Response(200, json=OPENAI_LIST))) as adapter:
        with pytest.raises(type(error)) as caught:
            await adapter.observe()
    assert caught.value is error
    assert not isinstance(caught.value, errors.LlmctlError)
