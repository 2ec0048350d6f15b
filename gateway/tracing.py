"""OpenTelemetry spans of the gateway: one per request, a child per provider tried.

`Tracing` is an `exchange.Observer` that turns each finished exchange into spans after the
reply went out, with the exchange's own times (``Exchange.started_ns`` plus monotonic offsets),
so tracing adds nothing to the request path but this; a client's W3C ``traceparent`` header
makes the request's span a child of the client's. Attributes follow the GenAI semantic
conventions (``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``) and
HTTP's (``http.response.status_code``, ``error.type``), plus ``llmctl.*`` for the backend, the
cache and the key's name; never a prompt, a reply, a secret or a credential. `provider` builds
the tracer provider from exporter names (``otlp``: OTLP over HTTP/protobuf, configured by the
standard ``OTEL_EXPORTER_OTLP_*`` variables, which the exporter reads; ``console``: JSON on
standard output) and the resource from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
Only ``llmctl gateway`` imports this module, and only when tracing is on: the OpenTelemetry
packages (the ``otel`` extra) are never loaded otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk import resources
from opentelemetry.sdk import trace as sdktrace
from opentelemetry.sdk.trace import export
from opentelemetry.trace.propagation import tracecontext

from gateway import exchange, exchangelabels

EXPORTERS = ("otlp", "console")
SERVICE_NAME = "llmctl-gateway"  # unless OTEL_SERVICE_NAME names the service
_PROPAGATOR = tracecontext.TraceContextTextMapPropagator()
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}


def provider(exporters: Sequence[str]) -> sdktrace.TracerProvider:
    """A tracer provider exporting, in batches, to each of ``exporters`` (`EXPORTERS`)."""
    resource = resources.Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(resources.Resource({"service.name": SERVICE_NAME}))
    made = sdktrace.TracerProvider(resource=resource)
    for name in exporters:
        made.add_span_processor(export.BatchSpanProcessor(_exporter(name)))
    return made


def _exporter(name: str) -> export.SpanExporter:
    if name == "console":
        return export.ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    return trace_exporter.OTLPSpanExporter()


class Tracing:
    """Makes the spans of each finished exchange."""

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer("llmctl.gateway")

    def finished(self, record: exchange.Exchange) -> None:
        operation = OPERATIONS.get(record.endpoint, "chat")
        model = record.model[:200]
        end = _at(record, record.finished if record.finished is not None else time.monotonic())
        span = self._tracer.start_span(
            f"{operation} {model}",
            context=_parent(record),
            kind=trace.SpanKind.SERVER,
            start_time=record.started_ns,
            attributes=_request_attributes(record, operation, model),
        )
        if record.status >= 500 or record.error_type == exchangelabels.STREAM_INTERRUPTED:
            span.set_status(trace.StatusCode.ERROR, record.error_type or str(record.status))
        inside = trace.set_span_in_context(span)
        outcomes = exchangelabels.attempt_outcomes(record)
        for i, (attempt, outcome) in enumerate(outcomes):
            answered = i == len(outcomes) - 1 and (
                record.first_byte is not None or outcome == "cancelled"
            )
            child = self._tracer.start_span(
                f"{operation} {attempt.model}",
                context=inside,
                kind=trace.SpanKind.CLIENT,
                start_time=_at(record, attempt.started),
                attributes=_attempt_attributes(attempt, operation, outcome),
            )
            if outcome != exchangelabels.OK:
                child.set_status(trace.StatusCode.ERROR, outcome)
            child.end(end if answered else _at(record, attempt.started + attempt.latency_s))
        span.end(end)


def _parent(record: exchange.Exchange) -> context.Context | None:
    """The client's span, when it sent one in ``traceparent``."""
    if not record.traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": record.traceparent})


def _at(record: exchange.Exchange, monotonic: float) -> int:
    """The wall clock (ns since the epoch) of a ``time.monotonic`` reading of ``record``."""
    return record.started_ns + int((monotonic - record.started) * 1e9)


def _request_attributes(record: exchange.Exchange, operation: str, model: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "http.request.method": "POST",
        "url.path": record.endpoint,
        "http.response.status_code": record.status,
        "llmctl.stream": record.stream,
        "llmctl.attempts": len(record.attempts),
        "llmctl.failovers": record.failovers,
    }
    if record.attempts:
        attributes["gen_ai.response.model"] = record.attempts[-1].model
        attributes["llmctl.backend"] = record.attempts[-1].backend
    if record.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = record.usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = record.usage.completion_tokens
    failed = exchangelabels.error_class(record)
    if failed is not None:
        attributes["error.type"] = record.error_type or str(record.status)
        attributes["llmctl.error"] = failed
    ttft = record.ttft_s()
    if ttft is not None:
        attributes["llmctl.ttft_ms"] = round(ttft * 1000, 3)
    if record.cache:
        attributes["llmctl.cache"] = record.cache
    if record.grant is not None and record.grant.key is not None:
        attributes["llmctl.key"] = record.grant.key.name
    return attributes


def _attempt_attributes(attempt: exchange.Attempt, operation: str, outcome: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": attempt.model,
        "llmctl.backend": attempt.backend,
        "llmctl.outcome": outcome,
    }
    if attempt.status is not None:
        attributes["http.response.status_code"] = attempt.status
    if outcome != exchangelabels.OK:
        attributes["error.type"] = outcome
    return attributes
