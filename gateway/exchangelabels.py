"""The bounded names the gateway's metrics, log line and spans give a finished exchange.

A finished `exchange.Exchange` says what happened in open terms (an attempt's ``reason`` is a
sentence; the requested model is whatever the client sent); metrics need a small fixed set of
label values, and the log line and the spans use the same words so that one can go from a
graph to a log line to a trace. Here: the class of an error (`error_class`), the outcome of an
attempt (`attempt_outcome`), the status class (`status_class`), whether the gateway itself
limited a request (`limited`), and `FleetModels`, which tells a model the fleet serves from
arbitrary client input (counted under `UNKNOWN_MODEL`). Called by `gatewaymetrics`,
`requestlog` and `tracing`; pure apart from reading the resolver's index.
"""

from __future__ import annotations

from gateway import exchange
from runtimestate import resolver
from runtimestate.resolver import candidates

UNKNOWN_MODEL = "(unknown)"  # a requested model no backend of the fleet serves
NO_BACKEND = "(none)"  # the request never reached a provider

# error classes
REFUSED = "refused"  # the gateway answered 4xx/5xx itself: bad input, key, limit, no provider
UPSTREAM = "upstream"  # providers were tried and the reply is an error
STREAM_INTERRUPTED = "stream_interrupted"  # the provider broke off after the first byte
CLIENT_CLOSED = "client_closed"  # the client went away before the reply was over
ERROR_CLASSES = (REFUSED, UPSTREAM, STREAM_INTERRUPTED, CLIENT_CLOSED)

# attempt outcomes
OK = "ok"
ATTEMPT_OUTCOMES = (
    OK,
    "http_408",
    "http_429",
    "http_5xx",
    "http_4xx",  # the provider refused the stored credential (401/403): its failure
    "timeout",
    "connection",
    "credentials",  # the stored credential could not be read
    "interrupted",  # the reply broke off after its first byte
    "cancelled",  # the client went away during the attempt
)


def error_class(record: exchange.Exchange) -> str | None:
    """The class of what went wrong with ``record``, or None when it was answered well."""
    if record.error_type in (CLIENT_CLOSED, STREAM_INTERRUPTED):
        return record.error_type
    if record.status < 400:
        return None
    return UPSTREAM if record.attempts else REFUSED


def limited(record: exchange.Exchange) -> bool:
    """Whether the gateway itself answered 429 (a key's limit or budget), before any provider."""
    return record.status == 429 and not record.attempts


def status_class(status: int) -> str:
    """``2xx``, ``4xx``, ``5xx``..."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def attempt_outcomes(record: exchange.Exchange) -> list[tuple[exchange.Attempt, str]]:
    """Each attempt of ``record`` with its outcome (one of `ATTEMPT_OUTCOMES`)."""
    closed = record.error_type == CLIENT_CLOSED
    last = len(record.attempts) - 1
    return [
        (a, attempt_outcome(a, cancelled=closed and i == last))
        for i, a in enumerate(record.attempts)
    ]


def attempt_outcome(attempt: exchange.Attempt, *, cancelled: bool = False) -> str:
    """One of `ATTEMPT_OUTCOMES`, from what `forwarding` noted of the attempt; ``cancelled``
    when the client went away while it ran."""
    if attempt.ok:
        return OK
    if cancelled:
        return "cancelled"
    status = attempt.status
    if status is not None:
        if status in (408, 429):
            return f"http_{status}"
        if status >= 500:
            return "http_5xx"
        if status >= 400:
            return "http_4xx"
        return "interrupted"  # a 2xx that broke off
    reason = attempt.reason
    if reason == "timed out":
        return "timeout"
    if reason.startswith("failed:"):
        return "connection"
    if reason.startswith("its credentials"):
        return "credentials"
    return "cancelled"


class FleetModels:
    """The model names the fleet serves now (any phase), read from the resolver's index and
    rebuilt only when the index changes."""

    def __init__(self, r: resolver.Resolver) -> None:
        self._r = r
        self._index: candidates.Index | None = None
        self._names: frozenset[str] = frozenset()

    def label(self, record: exchange.Exchange) -> str:
        """``record``'s model, or `UNKNOWN_MODEL` when the fleet does not serve it: a model
        the resolver found providers for, or one in its index, is the fleet's."""
        if record.attempts:
            return record.model
        index = self._r.index()
        if index is not self._index:
            self._names = frozenset(c.model for c in index.all)
            self._index = index
        return record.model if record.model in self._names else UNKNOWN_MODEL
