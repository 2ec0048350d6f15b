"""What ``llmctl gateway`` watches its requests with: metrics, the request log line, spans.

`traces` reads the ``--traces`` option (or ``OTEL_TRACES_EXPORTER``, comma-separated, as the
OpenTelemetry SDK reads it; ``OTEL_SDK_DISABLED=true`` turns tracing off) into exporter names,
or raises `BadTraces` (an unknown exporter: a usage error; OTLP over a protocol other than
HTTP/protobuf, or OpenTelemetry not installed: a configuration error), before the gateway
connects to anything; `build` makes the observers the gateway's application is given: the
Prometheus metrics always (served on ``/metrics``), the canonical log line unless turned off,
and OpenTelemetry spans only when an exporter is named -- otherwise the OpenTelemetry packages
are never imported. Called by `controller.gatewaycommand` inside the command; it imports the
gateway inside its functions, and prints nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway import exchange
    from runtimestate import resolver

EXPORTERS = ("otlp", "console")


_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class BadTraces(ValueError):
    """A tracing setting that cannot be used; the message names the fix, ``code`` is the exit
    status (2: a bad option, 1: a configuration the gateway cannot start with)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class Observing:
    """The observers, the ``/metrics`` renderer, and what to call when the gateway stops
    (flushes the spans not yet exported)."""

    observers: tuple[exchange.Observer, ...]
    metrics: Callable[[], bytes]
    close: Callable[[], None]


def traces(option: str) -> tuple[str, ...]:
    """The exporter names ``option`` asks for (none: ``none`` or empty)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    names = [n.strip().lower() for n in option.split(",") if n.strip()]
    wrong = [n for n in names if n not in (*EXPORTERS, "none")]
    if wrong:
        raise BadTraces(
            f"--traces / OTEL_TRACES_EXPORTER {option!r}: unknown exporter {wrong[0]!r}; "
            "give otlp, console or none",
            code=2,
        )
    exporters = tuple(dict.fromkeys(n for n in names if n != "none"))
    if "otlp" in exporters:
        for variable in _PROTOCOLS:
            protocol = os.environ.get(variable, "").strip()
            if protocol and protocol != "http/protobuf":
                raise BadTraces(
                    f"{variable}={protocol}: the gateway exports OTLP over HTTP only; set "
                    f"{variable}=http/protobuf (collectors take it on port 4318)"
                )
    if exporters:
        try:
            from gateway import tracing  # noqa: F401 - present, so `build` can trace
        except ImportError as exc:
            raise BadTraces(
                f"tracing needs OpenTelemetry ({exc.name or exc} is not installed); install "
                "llmctl with its otel extra (pip install 'llmctl[otel]'), or set --traces none"
            ) from None
    return exporters


def build(r: resolver.Resolver, *, request_log: bool, exporters: tuple[str, ...]) -> Observing:
    """The gateway's observers, tracing with ``exporters`` (checked by `traces`)."""
    from gateway import exchangelabels, gatewaymetrics, requestlog

    metrics = gatewaymetrics.GatewayMetrics(exchangelabels.FleetModels(r))
    observers: list[exchange.Observer] = [metrics]
    if request_log:
        observers.append(requestlog.RequestLog())
    close: Callable[[], None] = lambda: None  # noqa: E731
    if exporters:
        from gateway import tracing

        provider = tracing.provider(exporters)
        observers.append(tracing.Tracing(provider))
        close = provider.shutdown
    return Observing(tuple(observers), metrics.render, close)
