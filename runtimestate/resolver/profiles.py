"""Resolver profiles: the learned figures of every provider as a versioned JSON document.

`Resolver.export_profiles` writes one and `Resolver.import_profiles` restores one, so a
restarted gateway does not start cold:

    {"kind": "ResolverProfiles", "version": 1, "exportedAt": "2026-01-01T10:00:00+00:00",
     "providers": [{"backend": "gpu-1", "model": "llama3:latest", "latencyS": 0.42,
                    "errorRate": 0.05, "samples": 120, "measuredAt": "2026-01-01T09:59:58+00:00"}]}

``latencyS`` is the EWMA latency of successful calls (null: never succeeded), ``errorRate`` the
error EWMA (0..1), ``samples`` the outcomes they rest on, ``measuredAt`` when they last moved
(ISO 8601, UTC): what `adaptive` and `least_loaded` rank by. On import the error rate fades by
the document's age (the tracker's half-life), as it would have in the exporting process; the
breaker is not part of a profile. A document that is not one, or of another version, raises
`ProfileError` naming the problem. Pure: the times come in as parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Container, Mapping
from typing import Any

from runtimestate import echo
from runtimestate.resolver import cooldown

KIND = "ResolverProfiles"
VERSION = 1


class ProfileError(ValueError):
    """A document `import_profiles` cannot restore; the message names the problem."""


def export(tracker: cooldown.Tracker, now: float, wall: dt.datetime) -> dict[str, Any]:
    """The document of ``tracker``'s figures; ``now`` is the tracker's clock at ``wall``."""
    providers = []
    for key, figures in sorted(tracker.figures().items()):
        backend, _, model = key.partition("/")
        measured = wall - dt.timedelta(seconds=max(0.0, now - figures.measured))
        providers.append(
            {
                "backend": backend,
                "model": model,
                "latencyS": figures.latency,
                "errorRate": figures.errors,
                "samples": figures.samples,
                "measuredAt": measured.isoformat(),
            }
        )
    return {
        "kind": KIND,
        "version": VERSION,
        "exportedAt": wall.isoformat(),
        "providers": providers,
    }


def restore(
    doc: object,
    tracker: cooldown.Tracker,
    known: Container[cooldown.Key],
    now: float,
    wall: dt.datetime,
) -> tuple[cooldown.Key, ...]:
    """Adopt the figures of ``doc`` (a document, or its JSON text) into ``tracker`` for the
    providers in ``known``; the others are skipped. Returns the keys restored. Raises
    `ProfileError` before changing anything when ``doc`` is not a version-1 document."""
    entries = parse(doc)
    half_life = tracker.policy.error_half_life_s
    restored = []
    for key, latency, errors, samples, measured in entries:
        if key not in known:
            continue
        age = max(0.0, (wall - measured).total_seconds())
        faded = errors * 0.5 ** (age / half_life)
        tracker.adopt(key, cooldown.Figures(latency, faded, samples, now - age))
        restored.append(key)
    return tuple(restored)


Entry = tuple[cooldown.Key, float | None, float, int, dt.datetime]


def parse(doc: object) -> list[Entry]:
    """The providers of a profiles document. Raises `ProfileError`."""
    if isinstance(doc, str | bytes):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise ProfileError(f"profiles: not JSON ({exc})") from None
    if not isinstance(doc, Mapping) or doc.get("kind") != KIND:
        raise ProfileError(
            f'profiles: not a resolver profiles document (expected "kind": "{KIND}"); '
            "give what Resolver.export_profiles() returned"
        )
    version = doc.get("version")
    if version != VERSION:
        raise ProfileError(
            f"profiles: version {echo.quoted(version)} is not one this llmctl reads ({VERSION}); "
            "export them again with this version"
        )
    providers = doc.get("providers")
    if not isinstance(providers, list):
        raise ProfileError("profiles: providers must be a list")
    return [_entry(i, item) for i, item in enumerate(providers)]


def _entry(i: int, item: object) -> Entry:
    where = f"profiles: providers[{i}]"
    if not isinstance(item, Mapping):
        raise ProfileError(f"{where} must be an object")
    backend, model = item.get("backend"), item.get("model")
    if not isinstance(backend, str) or not backend or "/" in backend:
        raise ProfileError(f"{where}.backend must be a backend name, got {echo.quoted(backend)}")
    if not isinstance(model, str) or not model:
        raise ProfileError(f"{where}.model must be a non-empty string, got {echo.quoted(model)}")
    latency = item.get("latencyS")
    if latency is not None:
        latency = _number(where, item, "latencyS", math.inf)
    errors = _number(where, item, "errorRate", 1.0)
    samples = item.get("samples")
    if type(samples) is not int or samples < 0:
        raise ProfileError(
            f"{where}.samples must be a non-negative integer, got {echo.quoted(samples)}"
        )
    return f"{backend}/{model}", latency, errors, samples, _instant(where, item.get("measuredAt"))


def _number(where: str, item: Mapping[str, Any], field: str, high: float) -> float:
    value = item.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{where}.{field} must be a number, got {echo.quoted(value)}")
    if not math.isfinite(value) or not 0.0 <= value <= high:
        raise ProfileError(
            f"{where}.{field} must be between 0 and {high}, got {echo.quoted(value)}"
        )
    return float(value)


def _instant(where: str, value: object) -> dt.datetime:
    try:
        instant = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ProfileError(
            f"{where}.measuredAt must be an ISO 8601 time with its offset, got {echo.quoted(value)}"
        )
    return instant
