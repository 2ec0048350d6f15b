"""Admission: a pull is queued only where the model fits on the backend's disk (issue 16).

`admit` is the planner's rule over one backend's pulls (`runtimestate.reconcile.plan` calls it
where pulls are decided). With a `planview.Capacity` on the view, the pulls whose size is known
are admitted in model-name order against the same free bytes; one that does not fit becomes a
`ReportDrift` (declared, not served) with `ReasonCode.INSUFFICIENT_CAPACITY` and the numbers
("needs 4.7 GB, 1.2 GB free of 20 GB", decimal units as Ollama prints them), and is queued in a
later cycle once room appears (a prune, a larger declaration). A pull of unknown size, and every
pull on a backend without a capacity, is left as it was: today's behaviour.

Conservative on purpose: a prune in the same plan does not free its bytes for a pull of that
plan (the delete may fail, or the observation be old); the next cycle sees the room and admits.

Pure: no I/O, no clock; must not import the adapters (`runtimestate.backends`).
"""

from __future__ import annotations

from collections.abc import Iterable

from runtimestate.reconcile import planview, steps

_UNITS = ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))


def admit(view: planview.BackendView, actions: Iterable[steps.Action]) -> list[steps.Action]:
    """``actions`` (one backend's declared-model actions) with each pull of known size that
    does not fit turned into drift with the numbers; admitted pulls say what they take."""
    given = list(actions)
    capacity = view.capacity
    if capacity is None:
        return given
    sizes = dict(capacity.sizes)
    pulls = sorted(
        (a for a in given if isinstance(a, steps.Pull) and a.model_key in sizes),
        key=lambda a: (a.model, a.model_key),
    )
    decided: dict[steps.Action, steps.Action] = {}
    free = capacity.free
    for pull in pulls:
        size = sizes[pull.model_key]
        if size <= free:
            free -= size
            decided[pull] = _admitted(pull, size, free + size, capacity.total)
        else:
            decided[pull] = held(pull, size, free, capacity.total)
    return [decided.get(action, action) for action in given]


def held(pull: steps.Pull, size: int, free: int, total: int) -> steps.ReportDrift:
    """The drift a pull becomes when ``size`` bytes do not fit in ``free`` of ``total``."""
    numbers = f"needs {human(size)}, {human(max(free, 0))} free of {human(total)}"
    text = f"{numbers}; pulled when room appears"
    return steps.ReportDrift(
        pull.backend,
        steps.DriftKind.DECLARED_NOT_SERVED,
        pull.model,
        steps.Reason(steps.ReasonCode.INSUFFICIENT_CAPACITY, text),
    )


def _admitted(pull: steps.Pull, size: int, free: int, total: int) -> steps.Pull:
    text = f"{pull.reason.text}; fits: {human(size)} of {human(free)} free of {human(total)}"
    return steps.Pull(
        pull.backend, pull.model, pull.model_key, pull.declaration,
        steps.Reason(pull.reason.code, text),
    )  # fmt: skip


def human(count: int) -> str:
    """Bytes in decimal units as Ollama's ``format.HumanBytes`` prints them: ``4.7 GB``,
    ``20 GB``, ``12 MB`` (a whole number from 10 of a unit, else one decimal when not whole)."""
    scale, unit = next(((s, u) for s, u in _UNITS if count >= s), (1, "B"))
    value = count / scale
    if scale == 1 or value >= 10 or value == int(value):
        return f"{int(value)} {unit}"
    return f"{value:.1f} {unit}"
