"""What the gateway notes about each request for its observers: usage, attempts, status."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators import faults
from gateway import exchange
from tests.integration import gateway_harness

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Why is the sky blue?"}]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[exchange.Exchange] = []

    def finished(self, record: exchange.Exchange) -> None:
        self.seen.append(record)


class Broken:
    def finished(self, record: exchange.Exchange) -> None:
        raise RuntimeError("an observer's bug")


async def test_a_plain_chat_notes_the_backends_usage_and_its_status() -> None:
    seen = Recorder()
    async with gateway_harness.running(observers=(Broken(), seen)) as h:
        reply = await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
    assert reply.usage is not None
    [record] = seen.seen
    assert record.status == 200
    assert record.error_type is None
    assert record.usage is not None
    assert (record.usage.prompt_tokens, record.usage.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert record.model == "qwen"
    assert not record.stream
    assert record.backend in {"vllm-0", "vllm-1"}
    assert record.failovers == 0
    ttft = record.ttft_s()
    assert ttft is not None
    assert 0 < ttft <= record.duration_s()


async def test_a_stream_is_counted_without_the_client_seeing_a_usage_chunk_it_did_not_ask() -> None:
    seen = Recorder()
    async with gateway_harness.running(observers=(seen,)) as h:
        stream = await h.client.chat.completions.create(
            model="qwen", messages=MESSAGES, stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert chunks
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    [record] = seen.seen
    assert record.stream
    assert record.usage is not None
    assert record.usage.completion_tokens == sum(
        1 for c in chunks if c.choices and c.choices[0].delta.content
    )


async def test_a_stream_whose_client_asked_for_usage_keeps_its_usage_chunk() -> None:
    seen = Recorder()
    async with gateway_harness.running(observers=(seen,)) as h:
        stream = await h.client.chat.completions.create(
            model="qwen",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert not chunks[-1].choices
    [record] = seen.seen
    assert record.usage is not None
    assert record.usage.total_tokens == chunks[-1].usage.total_tokens


async def test_embeddings_note_their_prompt_tokens() -> None:
    seen = Recorder()
    async with gateway_harness.running(observers=(seen,), runner="pooling") as h:
        reply = await h.client.embeddings.create(model="embedder", input=["a b c", "d"])
    [record] = seen.seen
    assert record.usage is not None
    assert record.usage.prompt_tokens == reply.usage.prompt_tokens > 0


async def test_a_failed_over_request_notes_every_attempt() -> None:
    seen = Recorder()
    async with gateway_harness.running(observers=(seen,), nodes=2) as h:
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500), node=0)
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500), node=1)
        with pytest.raises(openai.InternalServerError):
            await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
        h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500, times=0), node=1)
    [record] = seen.seen
    assert record.status == 502
    assert record.error_type == "server_error"
    assert [a.status for a in record.attempts] == [500, 500]
    assert not any(a.ok for a in record.attempts)
    assert record.failovers == 1
    assert record.usage is None
    assert record.first_byte is None


async def test_a_refused_request_notes_the_envelopes_type() -> None:
    seen = Recorder()
    async with gateway_harness.running(observers=(seen,)) as h:
        with pytest.raises(openai.NotFoundError):
            await h.client.chat.completions.create(model="nope", messages=MESSAGES)
    [record] = seen.seen
    assert (record.status, record.error_type, record.attempts) == (404, "not_found_error", [])
