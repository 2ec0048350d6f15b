"""Prometheus metrics of ``llmctl serve``, on a registry of its own (never the global default).

Built once by the composition root; `controller.scheduled` records each cycle (`observe_cycle`),
each failed job (`failed`) and the download counts it reads after a cycle (`set_downloads`);
`ObservingSink` sits between the runtime and the publisher and counts bytes pulled from the
download events; `controller.httpapi` renders `render()` on ``/metrics``. Publisher counters
(events published and dropped) and whether the replay stream is declared are read at scrape
time. Holds no I/O of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import prometheus_client
from prometheus_client import core, registry

from dwqueue import events, jobs, publisher
from runtimestate import snapshot
from runtimestate.desired import names
from runtimestate.reconcile import cycle

PHASES = tuple(phase.value for phase in snapshot.Phase)
DOWNLOAD_STATES = tuple(state.value for state in jobs.JobState)


class Metrics:
    """Every metric ``/metrics`` shows; one instance per process."""

    def __init__(
        self,
        stats: Callable[[], publisher.Stats] | None = None,
        replay: Callable[[], bool | None] | None = None,
    ) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cycle_duration = prometheus_client.Histogram(
            "llmctl_cycle_duration_seconds", "Duration of backend cycles.", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.cycles = prometheus_client.Counter(
            "llmctl_cycles", "Backend and download cycles run, by kind and outcome.",
            ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.backends = prometheus_client.Gauge(
            "llmctl_backends", "Declared backends by observed phase.", ["phase"], registry=r
        )
        self.desired = prometheus_client.Gauge(
            "llmctl_desired_models", "Desired (backend, model) pairs.", registry=r
        )
        self.ready = prometheus_client.Gauge(
            "llmctl_ready_models", "Desired (backend, model) pairs the backend serves.", registry=r
        )
        self.downloads = prometheus_client.Gauge(
            "llmctl_downloads", "Download jobs by state.", ["state"], registry=r
        )
        self.bytes_pulled = prometheus_client.Counter(
            "llmctl_pulled_bytes", "Bytes downloaded by pulls this process ran.", registry=r
        )
        self.errors = prometheus_client.Counter(
            "llmctl_errors", "Failures of scheduled work, by kind.", ["kind"], registry=r
        )
        self.control = prometheus_client.Counter(
            "llmctl_control_requests",
            "Messages on the control subjects, by subject and outcome: confirmed by the "
            "database, unconfirmed (it names nothing the database has), malformed, unchecked.",
            ["subject", "outcome"],
            registry=r,
        )
        self.scheduler_running = prometheus_client.Gauge(
            "llmctl_scheduler_running", "1 while the scheduler runs.", registry=r
        )
        for phase in PHASES:
            self.backends.labels(phase=phase)
        for state in DOWNLOAD_STATES:
            self.downloads.labels(state=state)
        if stats is not None:
            r.register(_PublisherCollector(stats, replay or (lambda: None)))

    def observe_cycle(self, report: cycle.Report) -> None:
        """Record one backend cycle's duration and the state it left."""
        self.cycle_duration.observe(report.duration_s)
        self.cycles.labels(kind="backend", outcome="ok").inc()
        self.set_snapshot(report.snapshot)

    def set_snapshot(self, taken: snapshot.Snapshot) -> None:
        phases = [s.phase.value for s in taken.backends.values()]
        for phase in PHASES:
            self.backends.labels(phase=phase).set(phases.count(phase))
        desired, ready = pairs(taken)
        self.desired.set(desired)
        self.ready.set(ready)

    def set_downloads(self, counts: Mapping[str, int]) -> None:
        for state in DOWNLOAD_STATES:
            self.downloads.labels(state=state).set(counts.get(state, 0))

    def failed(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()
        self.cycles.labels(kind=kind, outcome="error").inc()

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def pairs(taken: snapshot.Snapshot) -> tuple[int, int]:
    """(desired, ready): declared (backend, model) pairs, and those the backend serves."""
    desired = ready = 0
    for state in taken.backends.values():
        served = {names.key(m.name, state.type) for m in state.serving}
        for model in state.models:
            desired += 1
            ready += names.key(model, state.type) in served
    return desired, ready


class _PublisherCollector(registry.Collector):
    def __init__(
        self, stats: Callable[[], publisher.Stats], replay: Callable[[], bool | None]
    ) -> None:
        self._stats = stats
        self._replay = replay

    def collect(self) -> Iterator[core.Metric]:
        stats = self._stats()
        published = core.CounterMetricFamily("llmctl_events_published", "Messages handed to NATS.")
        published.add_metric([], stats.published)
        dropped = core.CounterMetricFamily(
            "llmctl_events_dropped", "Messages dropped while NATS was unavailable."
        )
        dropped.add_metric([], stats.dropped)
        replay = core.GaugeMetricFamily(
            "llmctl_events_replay_stream",
            "1 once the JetStream stream that replays download events is declared; 0 on plain "
            "NATS, before it is declared or when JetStream does not answer.",
        )
        replay.add_metric([], 1 if self._replay() else 0)
        yield published
        yield dropped
        yield replay


@dataclasses.dataclass
class ObservingSink:
    """A `runtimestate` message sink that counts bytes pulled, then forwards to ``inner``.

    Ollama reports progress per layer (digest); the bytes added since the last event of the
    same layer are counted, so throttled or coalesced events lose nothing.
    """

    inner: publisher.Publisher
    metrics: Metrics
    _seen: dict[tuple[jobs.JobId, str], int] = dataclasses.field(default_factory=dict)

    async def publish(self, event: events.DownloadEvent) -> bool:
        if event.completed is not None and event.digest:
            key = (event.job_id, event.digest)
            before = self._seen.get(key, 0)
            if event.completed > before:
                self.metrics.bytes_pulled.inc(event.completed - before)
                self._seen[key] = event.completed
        if event.TERMINAL:
            for key in [k for k in self._seen if k[0] == event.job_id]:
                del self._seen[key]
        return await self.inner.publish(event)

    async def publish_message(self, subject: str, payload: bytes) -> bool:
        return await self.inner.publish_message(subject, payload)
