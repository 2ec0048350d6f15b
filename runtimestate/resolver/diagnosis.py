"""The resolver's errors, and the one-line diagnostic that says why nothing qualified.

Raised by `runtimestate.resolver` when a request has no provider; read by applications and
``llmctl resolve`` (which prints the message and exits 1). The message names the filter that
came closest to succeeding, with the best figure on offer: "needs 32000 tokens; the largest
available, qwen2:7b on gpu-3, has 8192". Every error carries the full list of exclusions.
Pure: no I/O.

    LookupError
     └── ResolveError
          ├── NoAvailableModels     no ready backend serves any requested model
          └── NoSatisfactoryModel   some do, but the request's filters or the cooldown rule them out
"""

from __future__ import annotations

from collections.abc import Sequence

from runtimestate.resolver import candidates, resolution

Reason = resolution.Reason
_MAX_LISTED = 3


class ResolveError(LookupError):
    """No provider for a request; ``exclusions`` says why each candidate was left out."""

    def __init__(
        self, message: str, request: resolution.Request, exclusions: Sequence[resolution.Exclusion]
    ) -> None:
        super().__init__(message)
        self.request = request
        self.exclusions = tuple(exclusions)


class NoAvailableModels(ResolveError):
    """No ready backend serves any of the requested models (or any model at all)."""


class NoSatisfactoryModel(ResolveError):
    """The models are served, but no provider passes the filters or the cooldown."""


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _wanted(request: resolution.Request) -> str:
    return " or ".join(request.models) if request.models else "any model"


def failure(
    request: resolution.Request,
    excluded: Sequence[resolution.Exclusion],
    index: candidates.Index,
) -> ResolveError:
    """The error for a request nothing qualified for, with its diagnostic."""
    by_reason: dict[resolution.Reason, list[resolution.Exclusion]] = {}
    for item in excluded:
        by_reason.setdefault(item.reason, []).append(item)
    # The filters run in this order, so the last one that excluded anything came closest.
    for reason in (
        Reason.COOLING_DOWN,
        Reason.CONTEXT_TOO_SMALL,
        Reason.CAPABILITY_MISSING,
        Reason.SELECTOR_MISMATCH,
        Reason.TYPE_NOT_ALLOWED,
    ):
        items = by_reason.get(reason)
        if items:
            message = _message(reason, request, items)
            if reason is Reason.CONTEXT_TOO_SMALL:
                message += _big_enough_but_degraded(request, by_reason)
            if reason is Reason.SELECTOR_MISMATCH:
                message += _not_ready(by_reason, index)
            return NoSatisfactoryModel(message, request, excluded)
    return NoAvailableModels(_unavailable(request, by_reason, index), request, excluded)


def _message(
    reason: resolution.Reason, request: resolution.Request, items: list[resolution.Exclusion]
) -> str:
    wanted = _wanted(request)
    match reason:
        case Reason.CONTEXT_TOO_SMALL:
            best = max(items, key=lambda e: (e.context_length or 0, e.backend))
            has = (
                "an unknown context length" if best.context_length is None else best.context_length
            )
            return (
                f"needs {request.min_context} tokens; the largest available, "
                f"{best.model} on {best.backend}, has {has}"
            )
        case Reason.CAPABILITY_MISSING:
            listed = _listed([f"{e.model} on {e.backend}" for e in items])
            return (
                f"needs the {request.capability} capability; none of the {len(items)} available "
                f"providers of {wanted} has it ({listed})"
            )
        case Reason.TYPE_NOT_ALLOWED:
            allowed = ", ".join(sorted(request.types))
            return (
                f"allows only {allowed} backends; {wanted} is served only by other types of "
                f"backend ({_listed(sorted({e.backend for e in items}))})"
            )
        case Reason.SELECTOR_MISMATCH:
            return (
                f"allows only backends matching the selector {request.selector}; {wanted} is "
                f"served only by backends that do not match "
                f"({_listed(sorted({e.backend for e in items}))})"
            )
        case Reason.COOLING_DOWN:
            first = min(items, key=lambda e: (e.retry_in_s or 0.0, e.backend))
            return (
                f"every provider of {wanted} that qualifies is cooling down after failures; "
                f"the first, {first.model} on {first.backend}, gets a trial in "
                f"{first.retry_in_s or 0:.0f} s"
            )
    raise AssertionError(reason)  # pragma: no cover - only the filter reasons come here


def _big_enough_but_degraded(
    request: resolution.Request, by_reason: dict[resolution.Reason, list[resolution.Exclusion]]
) -> str:
    """A note naming Degraded providers that would have been big enough, if any."""
    bigger = sorted(
        {
            e.backend
            for e in by_reason.get(Reason.BACKEND_DEGRADED, [])
            if (e.context_length or 0) >= (request.min_context or 0)
        }
    )
    if not bigger:
        return ""
    verb = "is" if len(bigger) == 1 else "are"
    return f" ({_listed(bigger)} {verb} Degraded and big enough: allow degraded backends to use it)"


def _not_ready(
    by_reason: dict[resolution.Reason, list[resolution.Exclusion]], index: candidates.Index
) -> str:
    """A note naming the backends that were not even considered for their phase, if any."""
    down = sorted({e.backend for e in by_reason.get(Reason.BACKEND_NOT_READY, [])})
    if not down:
        return ""
    return f" (and {_listed([f'{b} is {index.backends[b].phase.value}' for b in down])})"


def _unavailable(
    request: resolution.Request,
    by_reason: dict[resolution.Reason, list[resolution.Exclusion]],
    index: candidates.Index,
) -> str:
    if not index.backends:
        return "no backend has reported its state yet (is the controller running?)"
    notes = []
    not_ready = sorted({e.backend for e in by_reason.get(Reason.BACKEND_NOT_READY, [])})
    if not_ready:
        phases = [f"{name} is {index.backends[name].phase.value}" for name in not_ready]
        notes.append(_listed(phases))
    degraded = sorted({e.backend for e in by_reason.get(Reason.BACKEND_DEGRADED, [])})
    if degraded:
        notes.append(f"{_listed(degraded)} Degraded (allow degraded backends to use it)")
    declared = [e for e in by_reason.get(Reason.MODEL_ABSENT, []) if e.declared]
    loras = [e for e in declared if e.model in index.backends[e.backend].adapters]  # issue 16
    declared = [e for e in declared if e not in loras]
    if loras:
        notes.append(f"declared on {_listed(sorted({e.backend for e in loras}))}, not loaded yet")
    if declared:
        notes.append(
            f"declared on {_listed(sorted({e.backend for e in declared}))}, not pulled yet"
        )
    suffix = f" ({'; '.join(notes)})" if notes else ""
    if not request.models:
        return f"no ready backend serves any model{suffix}"
    return f"no ready backend serves {_wanted(request)}{suffix}"
