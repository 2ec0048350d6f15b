"""The canonical log line: one ``gateway.request`` event per inference request, at info.

`RequestLog` is an `exchange.Observer`; ``llmctl gateway`` adds it unless
``--no-request-log`` says not to. The line holds what an operator needs to follow one request
(endpoint, model, backend, status, error class and type, duration and time to first token in
milliseconds, tokens, attempts, failovers, the cache's answer, the key's name) and nothing a
client or provider said: never the prompt or the reply, never the key's secret (only the name
its operator gave it), never a provider's credential. The requested model is the client's text,
so it is cut to `MODEL_CHARS` and its control characters escaped. Writes through structlog; it
never configures logging.
"""

from __future__ import annotations

from typing import Any

import structlog

from gateway import exchange, exchangelabels

log = structlog.get_logger("gateway.request")

MODEL_CHARS = 200
EVENT = "gateway.request"


class RequestLog:
    """Logs each finished exchange as one line."""

    def finished(self, record: exchange.Exchange) -> None:
        log.info(EVENT, **fields(record))


def fields(record: exchange.Exchange) -> dict[str, Any]:
    """The log line's fields for ``record``."""
    ttft = record.ttft_s()
    line: dict[str, Any] = {
        "endpoint": record.endpoint,
        "model": _printable(record.model[:MODEL_CHARS]),
        "stream": record.stream,
        "backend": record.backend,
        "status": record.status,
        "error": exchangelabels.error_class(record),
        "error_type": record.error_type,
        "duration_ms": round(record.duration_s() * 1000, 3),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
        "attempts": len(record.attempts),
        "failovers": record.failovers,
        "cache": record.cache or None,
        "key": None,
    }
    if record.usage is not None:
        line["prompt_tokens"] = record.usage.prompt_tokens
        line["completion_tokens"] = record.usage.completion_tokens
    if record.grant is not None and record.grant.key is not None:
        line["key"] = record.grant.key.name
    if record.failovers:
        line["tried"] = ",".join(
            f"{a.backend}:{outcome}" for a, outcome in exchangelabels.attempt_outcomes(record)
        )
    return line


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a newline in a client's model name must not
    start a forged line in a console log."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
