"""Shared HTTP plumbing: the body-size cap, error-envelope parsing, URL validation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtimestate import errors
from runtimestate.backends import httpapi, transport


def _client(handler: httpx.MockTransport, limit: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport.capped(handler, limit), base_url="http://n")


async def test_capped_transport_aborts_a_body_longer_than_the_limit() -> None:
    mock = httpx.MockTransport(lambda _: httpx.Response(200, content=b"x" * 1001))
    async with _client(mock, 1000) as client:
        with pytest.raises(transport.BodyTooLarge):
            await client.get("/")


async def test_capped_transport_passes_a_body_at_the_limit() -> None:
    mock = httpx.MockTransport(lambda _: httpx.Response(200, content=b"x" * 1000))
    async with _client(mock, 1000) as client:
        response = await client.get("/")
    assert len(response.content) == 1000


async def test_capped_transport_caps_ndjson_per_line_not_in_total() -> None:
    body = b'{"status":"pulling"}\n' * 100
    headers = {"content-type": "application/x-ndjson"}
    mock = httpx.MockTransport(lambda _: httpx.Response(200, content=body, headers=headers))
    async with _client(mock, 64) as client:
        response = await client.get("/")
    assert response.content == body


async def test_capped_transport_aborts_one_overlong_ndjson_line() -> None:
    body = b'{"status":"ok"}\n' + b" " * 200 + b"\n"
    headers = {"content-type": "application/x-ndjson"}
    mock = httpx.MockTransport(lambda _: httpx.Response(200, content=body, headers=headers))
    async with _client(mock, 64) as client:
        with pytest.raises(transport.BodyTooLarge):
            await client.get("/")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"nested","type":"NotFoundError","code":404}}', "nested"),
        (b'{"object":"error","message":"flat","type":"BadRequestError"}', "flat"),
        (b'{"error":"model \'x\' not found"}', "model 'x' not found"),
        (b'{"detail":"Not Found"}', "Not Found"),
        (b"404 page not found", "404 page not found"),
        (b"[1, 2]", "[1, 2]"),
        (b'{"other": 1}', '{"other": 1}'),
    ],
)
def test_error_message_reads_every_envelope(body: bytes, message: str) -> None:
    assert transport.error_message(body) == message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host",
        "http://",
        "http://user:secret@host:1",
        "http://host/?key=secret",
        "not a url",
    ],
)
def test_validate_base_url_refuses_urls_that_cannot_or_must_not_be_used(url: str) -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        httpapi.validate_base_url(url)
    assert "secret" not in str(caught.value)


def test_validate_base_url_keeps_a_path_prefix_without_trailing_slash() -> None:
    assert httpapi.validate_base_url("http://127.0.0.1:9000/nodes/17/") == (
        "http://127.0.0.1:9000/nodes/17"
    )


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    limit=st.integers(min_value=1, max_value=30),
)
def test_the_per_line_cap_fires_exactly_when_some_line_is_too_long_however_it_is_chunked(
    lines: list[int], cuts: list[int], limit: int
) -> None:
    body = b"".join(b"x" * n + b"\n" for n in lines)
    bounds = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
    headers = {"content-type": "application/x-ndjson"}

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=_Chunks(chunks))

    async def fetch() -> bool:
        async with _client(httpx.MockTransport(handler), limit) as client:
            try:
                await client.get("/")
            except transport.BodyTooLarge:
                return True
        return False

    assert asyncio.run(fetch()) is (max(lines) > limit)
