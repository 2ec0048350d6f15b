"""The gateway's OpenTelemetry spans, read with the SDK's in-memory exporter: one span per
request and a child per provider tried, with the exchange's own times and GenAI attributes."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry import trace
from opentelemetry.sdk import trace as sdktrace
from opentelemetry.sdk.trace import export
from opentelemetry.sdk.trace.export import in_memory_span_exporter

from emulators import faults
from gateway import exchange, tracing
from tests.integration import gateway_harness

PROMPT_MARKER = "zebra-quartz-prompt-9913"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": f"Tell me about {PROMPT_MARKER}."}
]


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[exchange.Exchange] = []

    def finished(self, record: exchange.Exchange) -> None:
        self.seen.append(record)


@pytest.fixture
def spans() -> in_memory_span_exporter.InMemorySpanExporter:
    return in_memory_span_exporter.InMemorySpanExporter()


def _tracing(exporter: in_memory_span_exporter.InMemorySpanExporter) -> tracing.Tracing:
    provider = sdktrace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    return tracing.Tracing(provider)


async def test_a_failed_over_request_is_one_span_with_a_child_per_attempt(
    spans: in_memory_span_exporter.InMemorySpanExporter,
) -> None:
    seen = _Recorder()
    async with gateway_harness.running(nodes=2, observers=(_tracing(spans), seen)) as h:
        for node in range(2):  # each node fails its first request
            h.emulator.set_fault(faults.Fault(faults.FaultKind.HTTP_500, times=1), node=node)
        with pytest.raises(openai.InternalServerError):
            await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
        reply = await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
    failed_record, ok_record = seen.seen
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.parent is None]
    assert [s.name for s in roots] == ["chat qwen", "chat qwen"]
    failed, ok = roots
    assert failed.kind is trace.SpanKind.SERVER
    assert failed.start_time == failed_record.started_ns
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["http.response.status_code"] == 502
    assert failed.attributes["error.type"] == "server_error"
    assert failed.attributes["llmctl.failovers"] == 1
    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == failed.context.span_id
    ]
    assert len(children) == 2
    for child in children:
        assert child.kind is trace.SpanKind.CLIENT
        assert child.attributes is not None
        assert child.attributes["llmctl.outcome"] == "http_5xx"
        assert child.attributes["http.response.status_code"] == 500
        assert child.status.status_code is trace.StatusCode.ERROR
        assert child.start_time is not None
        assert child.end_time is not None
        assert failed.start_time is not None
        assert failed.end_time is not None
        assert failed.start_time <= child.start_time <= child.end_time <= failed.end_time
    assert {c.attributes["llmctl.backend"] for c in children if c.attributes} == {
        "vllm-0",
        "vllm-1",
    }
    assert ok.context.trace_id != failed.context.trace_id
    assert ok.status.status_code is trace.StatusCode.UNSET
    assert ok.attributes is not None
    assert reply.usage is not None
    assert ok.attributes["gen_ai.operation.name"] == "chat"
    assert ok.attributes["gen_ai.request.model"] == "qwen"
    assert ok.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert ok.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert ok.attributes["http.response.status_code"] == 200
    assert ok.end_time is not None
    assert ok.end_time - ok.start_time == pytest.approx(ok_record.duration_s() * 1e9, abs=1e3)
    [answered] = [
        s for s in finished if s.parent is not None and s.parent.span_id == ok.context.span_id
    ]
    assert answered.end_time == ok.end_time  # the attempt that answered lasts to the reply's end
    assert PROMPT_MARKER not in repr([s.to_json() for s in finished])


async def test_embeddings_spans_name_their_operation(
    spans: in_memory_span_exporter.InMemorySpanExporter,
) -> None:
    async with gateway_harness.running(observers=(_tracing(spans),), runner="pooling") as h:
        await h.client.embeddings.create(model="embedder", input=["a b c"])
    root = next(s for s in spans.get_finished_spans() if s.parent is None)
    assert root.name == "embeddings embedder"
    assert root.attributes is not None
    assert root.attributes["gen_ai.usage.input_tokens"] > 0


async def test_a_clients_traceparent_makes_the_request_span_its_child(
    spans: in_memory_span_exporter.InMemorySpanExporter,
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with gateway_harness.running(nodes=1, observers=(_tracing(spans),)) as h:
        await h.client.chat.completions.create(
            model="qwen",
            messages=MESSAGES,
            extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
    request, alone = (s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER)
    assert request.parent is not None
    assert request.parent.span_id == int(parent_id, 16)
    assert request.context.trace_id == int(trace_id, 16)
    assert alone.parent is None
