"""Injected failures, shared by the Ollama and vLLM emulators.

A `Fault` says what goes wrong (`FaultKind`) and how often (`times`, None = every request).
Each emulated node holds a `FaultTable` mapping an endpoint path (`/api/pull`, `/v1/models`, or
`*` for every path) to its faults. The server consults the table once per request:

- `latency`: wait `latency` seconds, then answer normally.
- `hang`: never answer (the request stays open until the client gives up or the server stops).
- `http_500`, `http_503`: answer that status with the flavour's error body.
- `http_429`: answer 429 with `Retry-After: <retry_after>` (seconds) and the error body.
- `reset`: abort the TCP connection; in a streamed response after `after_lines` lines.
- `malformed`: send invalid JSON (a truncated body, or a truncated line after `after_lines`).
- `oversized`: pad the body (or one streamed line) with whitespace to `size` bytes.
- `stream_error`: after `after_lines` lines of a streamed response, send the route's error
  event (an OpenAI `{"error": {...}}` frame on SSE, `{"error": "..."}` on NDJSON) and end.
- `truncate`: end a streamed response cleanly after `after_lines` lines, without its last line
  (`data: [DONE]`, or Ollama's `done` line): a cut the client cannot tell from an end.

`reset` with `after_lines` 0 on a streamed response drops the connection before the status
line: the "connection reset before the first byte".

Pure data and bookkeeping; the server and `streams` apply the faults.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

ALL_ENDPOINTS = "*"


class FaultKind(enum.StrEnum):
    """What an injected fault does to a request."""

    LATENCY = "latency"
    HANG = "hang"
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    HTTP_429 = "http_429"
    RESET = "reset"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    STREAM_ERROR = "stream_error"
    TRUNCATE = "truncate"


# Kinds that only change streamed responses; a plain response is answered normally.
STREAM_ONLY = frozenset({FaultKind.STREAM_ERROR, FaultKind.TRUNCATE})
# The status each `http_*` kind answers with.
STATUS = {FaultKind.HTTP_500: 500, FaultKind.HTTP_503: 503, FaultKind.HTTP_429: 429}


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected failure; fields other than `kind` only matter for some kinds."""

    kind: FaultKind
    latency: float = 0.0
    after_lines: int = 0
    size: int = 4_000_000
    retry_after: float = 1.0
    times: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by the admin endpoint."""
        return {**dataclasses.asdict(self), "kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Parse the admin endpoint's JSON. Raises ValueError on an unknown kind or field."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields - {"endpoint", "node"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["kind"] = FaultKind(data.get("kind", ""))
        return cls(**kwargs)


@dataclasses.dataclass
class _Armed:
    fault: Fault
    remaining: int | None


class FaultTable:
    """The faults armed on one node, keyed by endpoint path. Not thread-safe."""

    def __init__(self) -> None:
        self._armed: dict[str, list[_Armed]] = {}

    def set(self, fault: Fault, endpoint: str = ALL_ENDPOINTS) -> None:
        """Arm `fault` on `endpoint`, replacing a fault of the same kind there."""
        rules = [a for a in self._armed.get(endpoint, []) if a.fault.kind != fault.kind]
        rules.append(_Armed(fault, fault.times))
        self._armed[endpoint] = rules

    def clear(self, endpoint: str | None = None) -> None:
        """Disarm every fault, or only those of one endpoint."""
        if endpoint is None:
            self._armed.clear()
        else:
            self._armed.pop(endpoint, None)

    def take(self, endpoint: str) -> list[Fault]:
        """Faults that hit this request to `endpoint`; each use counts against `times`."""
        if not self._armed:
            return []
        hits: list[Fault] = []
        for key in (endpoint, ALL_ENDPOINTS):
            rules = self._armed.get(key)
            if not rules:
                continue
            for armed in rules:
                if armed.remaining is None or armed.remaining > 0:
                    hits.append(armed.fault)
                    if armed.remaining is not None:
                        armed.remaining -= 1
            self._armed[key] = [a for a in rules if a.remaining is None or a.remaining > 0]
            if not self._armed[key]:
                del self._armed[key]
        return hits

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Armed faults per endpoint, with the uses left in `times`."""
        return {
            endpoint: [{**a.fault.to_dict(), "times": a.remaining} for a in rules]
            for endpoint, rules in self._armed.items()
        }


def find(faults: list[Fault], kind: FaultKind) -> Fault | None:
    """The fault of `kind` in `faults`, if any."""
    return next((f for f in faults if f.kind == kind), None)


def malformed(body: bytes) -> bytes:
    """Invalid JSON made from a valid body: its first half, never a complete document."""
    return body[: max(1, len(body) // 2)] if len(body) > 1 else b'{"'


def oversized(body: bytes, size: int) -> bytes:
    """`body` padded with JSON whitespace up to `size` bytes (still parseable)."""
    trailer = b"\n" if body.endswith(b"\n") else b""
    core = body.removesuffix(b"\n")
    return core + b" " * max(0, size - len(body)) + trailer
