"""One request's record as it passes through the gateway, and the observers that read it.

`application` makes an `Exchange` per inference request; `forwarding` adds an `Attempt` per
provider tried, `relaying` the time of the first byte, the backend's ``usage`` and (when asked
to) the reply's body; `application` the final status. When the request is over, every
`Observer` the application was built with gets the finished exchange: accounting (tokens,
spend), metrics, the canonical log line and traces read it there, after the reply went out,
instead of each threading itself through the request path. Observers must be quick and must
not raise (one that does is logged and skipped); they never see the request's body or a
secret: the exchange holds neither (``reply`` is kept only for the cache, and only when it asked).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import structlog

from gateway import access, prices

log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class Attempt:
    """One provider tried: which, when (``time.monotonic``), how long until its first byte or
    its failure, and how it went (``ok``: it answered; else the reason)."""

    backend: str
    model: str
    started: float
    latency_s: float = 0.0
    ok: bool = False
    reason: str = ""
    status: int | None = None


@dataclasses.dataclass(slots=True)
class Exchange:
    """What happened to one request. Times are ``time.monotonic`` seconds, apart from
    ``started_wall`` (seconds since the epoch) and ``started_ns`` (``time.time_ns``, for
    spans)."""

    endpoint: str
    started: float = dataclasses.field(default_factory=time.monotonic)
    started_wall: float = dataclasses.field(default_factory=time.time)
    started_ns: int = dataclasses.field(default_factory=time.time_ns)
    model: str = ""
    stream: bool = False
    grant: access.Grant | None = None  # what `access.Keys.admit` returned
    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    first_byte: float | None = None  # when the client's first byte was in hand
    finished: float | None = None
    status: int = 0
    error_type: str | None = None  # the envelope's ``type`` when the gateway refused or failed
    usage: prices.Usage | None = None
    cache: str = ""  # "hit", "miss" or "" (not cacheable)
    keep_reply: int = 0  # set by the cache: relaying keeps a successful JSON reply this size
    reply: bytes | None = None
    traceparent: str = ""  # the client's W3C ``traceparent`` header: the spans' parent

    @property
    def backend(self) -> str | None:
        """The backend that answered (the last attempt's), or None when none was tried."""
        return self.attempts[-1].backend if self.attempts else None

    @property
    def failovers(self) -> int:
        """Providers tried after the first one."""
        return max(0, len(self.attempts) - 1)

    def ttft_s(self) -> float | None:
        """Seconds from receipt to the first byte of the reply, if one came from a provider."""
        return None if self.first_byte is None else self.first_byte - self.started

    def duration_s(self) -> float:
        """Seconds from receipt to the end of the reply (or to now, when not finished)."""
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started


class Observer(Protocol):
    """Reads finished exchanges (metrics, accounting, the log line, traces)."""

    def finished(self, exchange: Exchange) -> None: ...


def notify(observers: tuple[Observer, ...], exchange: Exchange) -> None:
    """Give ``exchange`` to each observer; one that raises is logged and the rest still run."""
    for observer in observers:
        try:
            observer.finished(exchange)
        except Exception as exc:  # an observer's bug must not fail the request path
            log.error(
                "gateway.observer_failed",
                observer=type(observer).__name__,
                error=f"{type(exc).__name__}: {exc}",
            )
