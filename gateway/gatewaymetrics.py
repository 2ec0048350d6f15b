"""Prometheus metrics of ``llmctl gateway``, counted from each finished exchange.

`GatewayMetrics` is an `exchange.Observer` on a registry of its own (never the global default);
``llmctl gateway`` builds one, passes it to `application.build` as an observer and its `render`
as the ``/metrics`` route. Names follow `controller.metrics` (``llmctl_`` and the noun; the
client library adds ``_total`` to counters). Every label value is bounded: endpoints are the
gateway's routes, models and backends come from the fleet (a requested model the fleet does not
serve counts as ``(unknown)``, `exchangelabels.FleetModels`), statuses are classes, errors and
attempt outcomes are the fixed words of `exchangelabels`. Never labels by key, prompt or
anything else a client chooses. Holds no I/O of its own; quick, it never raises on a request.
"""

from __future__ import annotations

import prometheus_client

from gateway import exchange, exchangelabels

# From a cache hit (a millisecond) to a long generation (minutes).
BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class GatewayMetrics:
    """Every metric the gateway's ``/metrics`` shows; one instance per gateway process."""

    def __init__(self, models: exchangelabels.FleetModels) -> None:
        self._models = models
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        r = self.registry
        request = ["endpoint", "model", "backend"]
        self.requests = prometheus_client.Counter(
            "llmctl_gateway_requests",
            "Inference requests answered, by endpoint, model, backend and status class.",
            [*request, "status"], registry=r,
        )  # fmt: skip
        self.errors = prometheus_client.Counter(
            "llmctl_gateway_errors",
            "Requests that failed, by class (refused by the gateway, upstream, "
            "stream_interrupted, client_closed) and OpenAI error type.",
            ["endpoint", "model", "class", "type"], registry=r,
        )  # fmt: skip
        self.duration = prometheus_client.Histogram(
            "llmctl_gateway_request_duration_seconds",
            "Seconds from a request's receipt to the end of its reply.",
            request, buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = prometheus_client.Histogram(
            "llmctl_gateway_time_to_first_token_seconds",
            "Seconds from a request's receipt to the first byte of its provider's reply.",
            request, buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = prometheus_client.Counter(
            "llmctl_gateway_tokens",
            "Tokens the backends counted (their usage), by direction: input or output.",
            ["model", "backend", "direction"], registry=r,
        )  # fmt: skip
        self.cache = prometheus_client.Counter(
            "llmctl_gateway_cache_lookups",
            "Cacheable requests, by result: hit or miss.",
            ["endpoint", "model", "result"], registry=r,
        )  # fmt: skip
        self.limited = prometheus_client.Counter(
            "llmctl_gateway_limited_requests",
            "Requests the gateway itself answered 429 (a key's rate limit or budget).",
            ["endpoint", "model", "type"], registry=r,
        )  # fmt: skip
        self.failovers = prometheus_client.Counter(
            "llmctl_gateway_failovers",
            "Providers tried after a request's first one.",
            ["endpoint", "model"], registry=r,
        )  # fmt: skip
        self.attempts = prometheus_client.Counter(
            "llmctl_gateway_attempts",
            "Providers tried, by backend and outcome.",
            ["model", "backend", "outcome"], registry=r,
        )  # fmt: skip
        # The children of each label set, found once: `labels` costs more than the count.
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._attempts: dict[tuple[str, str, str], prometheus_client.Counter] = {}

    def finished(self, record: exchange.Exchange) -> None:
        """Count one finished exchange."""
        endpoint, model = record.endpoint, self._models.label(record)
        backend = record.backend or exchangelabels.NO_BACKEND
        series = self._series.get((endpoint, model, backend))
        if series is None:
            series = self._series[endpoint, model, backend] = _Series(
                self, endpoint, model, backend
            )
        series.requests(exchangelabels.status_class(record.status)).inc()
        series.duration.observe(record.duration_s())
        ttft = record.ttft_s()
        if ttft is not None:
            series.ttft.observe(ttft)
        if record.usage is not None:
            series.input_tokens.inc(record.usage.prompt_tokens)
            series.output_tokens.inc(record.usage.completion_tokens)
        for attempt, outcome in exchangelabels.attempt_outcomes(record):
            key = (attempt.model, attempt.backend, outcome)
            child = self._attempts.get(key)
            if child is None:
                child = self._attempts[key] = self.attempts.labels(*key)
            child.inc()
        if record.status >= 400 or record.error_type or record.cache or record.failovers:
            self._rarer(record, endpoint, model)

    def _rarer(self, record: exchange.Exchange, endpoint: str, model: str) -> None:
        """The counts only some exchanges add to: errors, limits, the cache, failovers."""
        failed = exchangelabels.error_class(record)
        if failed is not None:
            self.errors.labels(endpoint, model, failed, record.error_type or "").inc()
        if exchangelabels.limited(record):
            self.limited.labels(endpoint, model, record.error_type or "").inc()
        if record.cache:
            self.cache.labels(endpoint, model, record.cache).inc()
        if record.failovers:
            self.failovers.labels(endpoint, model).inc(record.failovers)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return prometheus_client.generate_latest(self.registry)


class _Series:
    """The children of one (endpoint, model, backend), looked up once."""

    def __init__(self, metrics: GatewayMetrics, endpoint: str, model: str, backend: str) -> None:
        self._metrics = metrics
        self._labels = (endpoint, model, backend)
        self._requests: dict[str, prometheus_client.Counter] = {}
        self.duration = metrics.duration.labels(*self._labels)
        self.ttft = metrics.ttft.labels(*self._labels)
        self.input_tokens = metrics.tokens.labels(model, backend, "input")
        self.output_tokens = metrics.tokens.labels(model, backend, "output")

    def requests(self, status: str) -> prometheus_client.Counter:
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self._metrics.requests.labels(*self._labels, status)
        return child
