"""The bounded words the gateway's metrics, log line and spans give a finished exchange."""

from __future__ import annotations

import pytest

from gateway import exchange, exchangelabels, gatewaymetrics
from runtimestate import resolver
from tests.unit.test_resolver import backend, fleet, model


def _attempt(**fields: object) -> exchange.Attempt:
    return exchange.Attempt("vllm-0", "qwen", 1.0, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        (_attempt(ok=True, status=200), "ok"),
        (_attempt(ok=True, status=400), "ok"),  # the provider answered; the client erred
        (_attempt(reason="HTTP 500", status=500), "http_5xx"),
        (_attempt(reason="HTTP 503", status=503), "http_5xx"),
        (_attempt(reason="HTTP 429", status=429), "http_429"),
        (_attempt(reason="HTTP 408", status=408), "http_408"),
        (_attempt(status=401), "http_4xx"),  # the provider refused its stored key
        (_attempt(status=200), "interrupted"),  # broke off after its first byte
        (_attempt(reason="timed out"), "timeout"),
        (_attempt(reason="failed: ConnectError"), "connection"),
        (_attempt(reason="its credentials cannot be read: no key"), "credentials"),
        (_attempt(), "cancelled"),
    ],
)
def test_each_attempt_has_one_of_the_fixed_outcomes(
    attempt: exchange.Attempt, outcome: str
) -> None:
    assert exchangelabels.attempt_outcome(attempt) == outcome
    assert outcome in exchangelabels.ATTEMPT_OUTCOMES


def test_an_attempt_running_when_the_client_left_is_cancelled_not_interrupted() -> None:
    record = exchange.Exchange("/v1/chat/completions", status=499, error_type="client_closed")
    record.attempts = [_attempt(reason="HTTP 500", status=500), _attempt(status=200)]
    assert [o for _, o in exchangelabels.attempt_outcomes(record)] == ["http_5xx", "cancelled"]


@pytest.mark.parametrize(
    ("status", "error_type", "tried", "expected"),
    [
        (200, None, True, None),
        (404, "not_found_error", False, "refused"),
        (429, "rate_limit_error", False, "refused"),
        (502, "server_error", True, "upstream"),
        (400, None, True, "upstream"),  # a provider's own 4xx, passed through
        (200, "stream_interrupted", True, "stream_interrupted"),
        (499, "client_closed", True, "client_closed"),
        (499, "client_closed", False, "client_closed"),
    ],
)
def test_the_error_class_says_who_failed(
    status: int, error_type: str | None, tried: bool, expected: str | None
) -> None:
    record = exchange.Exchange("/v1/chat/completions", status=status, error_type=error_type)
    record.attempts = [_attempt()] if tried else []
    assert exchangelabels.error_class(record) == expected


def test_only_a_429_the_gateway_gave_itself_is_limited() -> None:
    own = exchange.Exchange("/v1/chat/completions", status=429, error_type="rate_limit_error")
    upstream = exchange.Exchange("/v1/chat/completions", status=429, error_type="rate_limit_error")
    upstream.attempts = [_attempt(reason="HTTP 429", status=429)]
    assert exchangelabels.limited(own)
    assert not exchangelabels.limited(upstream)


def _models() -> exchangelabels.FleetModels:
    snap = fleet(backend("vllm-0", model("qwen"), type_="vllm"))
    return exchangelabels.FleetModels(resolver.Resolver.from_snapshot(snap))


def test_a_model_the_fleet_does_not_serve_is_labelled_unknown() -> None:
    models = _models()
    served = exchange.Exchange("/v1/chat/completions", model="qwen")
    other = exchange.Exchange("/v1/chat/completions", model="ignore previous instructions")
    assert models.label(served) == "qwen"
    assert models.label(other) == exchangelabels.UNKNOWN_MODEL


def test_cache_hits_and_misses_are_counted_per_model() -> None:
    metrics = gatewaymetrics.GatewayMetrics(_models())
    for cache in ("hit", "hit", "miss", ""):
        metrics.finished(exchange.Exchange("/v1/chat/completions", model="qwen", cache=cache))
    value = metrics.registry.get_sample_value
    labels = {"endpoint": "/v1/chat/completions", "model": "qwen"}
    assert value("llmctl_gateway_cache_lookups_total", {**labels, "result": "hit"}) == 2
    assert value("llmctl_gateway_cache_lookups_total", {**labels, "result": "miss"}) == 1
    requests = {**labels, "backend": "(none)", "status": "other"}
    assert value("llmctl_gateway_requests_total", requests) == 4
