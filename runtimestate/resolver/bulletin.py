"""The outcome bulletin: what one resolver process tells the others about a backend's providers.

Encoded by `runtimestate.resolver.exchange` for ``<prefix>.v1.outcomes.<backend>`` and decoded
there from every message on ``<prefix>.v1.outcomes.*``. One message carries one backend's
providers whose figures or breaker moved since its last message:

    {"v": 1, "origin": "9f2c61d0a8b47e35", "backend": "gpu-1",
     "providers": [{"model": "llama3:latest", "latency_s": 0.42, "errors": 0.49,
                    "samples": 3, "breaker": {"state": "opened", "reopens_in_s": 29.99,
                                              "cooldown_s": 30.0}}]}

``breaker`` is present only when the breaker changed since that process's last message:
``{"state": "opened", ...}`` (durations, never times: clocks differ between hosts) or
``{"state": "closed"}``. Readers ignore fields they do not know; a message with a higher ``v``
is refused with `TooNew`, anything else unreadable with `Malformed`.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from runtimestate import echo

VERSION = 1
OPENED, CLOSED = "opened", "closed"


class Malformed(ValueError):
    """A message that is not an outcome bulletin; the text says what is wrong."""


class TooNew(ValueError):
    """A bulletin of a newer version than this process reads."""


@dataclasses.dataclass(frozen=True, slots=True)
class Breaker:
    """A breaker transition: opened (for ``reopens_in_s`` more seconds) or closed."""

    state: str
    reopens_in_s: float = 0.0
    cooldown_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One provider's figures, and its breaker's transition if it had one."""

    model: str
    latency_s: float | None
    errors: float
    samples: int
    breaker: Breaker | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Bulletin:
    origin: str
    backend: str
    entries: tuple[Entry, ...]


def encode(bulletin: Bulletin) -> bytes:
    providers = []
    for e in bulletin.entries:
        item: dict[str, Any] = {
            "model": e.model,
            "latency_s": e.latency_s,
            "errors": e.errors,
            "samples": e.samples,
        }
        if e.breaker is not None:
            item["breaker"] = {"state": e.breaker.state}
            if e.breaker.state == OPENED:
                item["breaker"]["reopens_in_s"] = e.breaker.reopens_in_s
                item["breaker"]["cooldown_s"] = e.breaker.cooldown_s
        providers.append(item)
    doc = {"v": VERSION, "origin": bulletin.origin, "backend": bulletin.backend}
    return json.dumps({**doc, "providers": providers}, separators=(",", ":")).encode()


def decode(data: bytes, backend: str) -> Bulletin:
    """The bulletin in ``data``, published on ``backend``'s subject (which it must name).

    Raises `TooNew` for a higher ``v`` and `Malformed` for anything else unreadable."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Malformed(f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("v")
    if type(version) is not int or version < 1:
        raise Malformed(f"v must be a positive integer, got {echo.quoted(version)}")
    if version > VERSION:
        raise TooNew(f"version {version} is newer than this process reads ({VERSION})")
    origin, named = doc.get("origin"), doc.get("backend")
    if not isinstance(origin, str) or not origin:
        raise Malformed("origin must be a non-empty string")
    if named != backend:
        raise Malformed(f"backend {echo.quoted(named)} is not the subject's {echo.quoted(backend)}")
    providers = doc.get("providers")
    if not isinstance(providers, list):
        raise Malformed("providers must be a list")
    return Bulletin(origin, backend, tuple(_entry(p) for p in providers))


def _entry(item: object) -> Entry:
    if not isinstance(item, dict):
        raise Malformed("every provider must be an object")
    model = item.get("model")
    if not isinstance(model, str) or not model:
        raise Malformed("a provider's model must be a non-empty string")
    latency = item.get("latency_s")
    if latency is not None:
        latency = _number(item, "latency_s", 0.0, math.inf)
    errors = _number(item, "errors", 0.0, 1.0)
    samples = item.get("samples")
    if type(samples) is not int or samples < 0:
        raise Malformed(f"samples must be a non-negative integer, got {echo.quoted(samples)}")
    breaker = item.get("breaker")
    return Entry(model, latency, errors, samples, None if breaker is None else _breaker(breaker))


def _breaker(item: object) -> Breaker:
    if not isinstance(item, dict):
        raise Malformed("breaker must be an object")
    state = item.get("state")
    if state == CLOSED:
        return Breaker(CLOSED)
    if state != OPENED:
        raise Malformed(f"breaker state must be 'opened' or 'closed', got {echo.quoted(state)}")
    return Breaker(
        OPENED,
        _number(item, "reopens_in_s", 0.0, math.inf),
        _number(item, "cooldown_s", 0.0, math.inf),
    )


def _number(item: dict[str, Any], field: str, low: float, high: float) -> float:
    value = item.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{field} must be a number, got {echo.quoted(value)}")
    if not math.isfinite(value) or not low <= value <= high:
        raise Malformed(f"{field} must be between {low} and {high}, got {echo.quoted(value)}")
    return float(value)
