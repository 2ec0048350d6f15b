"""Available upgrades: where a backend holds an older copy of a model than upstream has now.

Pure rules over snapshot states and the known upstream revisions (issue 19):

- `wanted` names what to ask upstream: each declared model a backend reports with a digest,
  as a `Source` (an Ollama backend's model by its registry reference, a node agent's weights by
  hub repo id); other backend types (vLLM, clouds) have nothing llmctl could upgrade.
- `available` lists, for one state, each model whose reported digest differs from the
  known `Latest` revision: an `Upgrade` from the held digest to the new one, since when.
- `marked` adds the ``UpdateAvailable`` condition (reason ``update_available``; the message
  names each model with ``from -> to`` short digests and since when) to the states holding an
  old copy, and leaves the others as they are.

Called by the backend cycle (`runtimestate.reconcile.upgradechecks` feeds it) and by
``llmctl model upgrades`` over the persisted states. No I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping

from runtimestate import snapshot
from runtimestate.desired import names

CONDITION = "UpdateAvailable"
REASON = "update_available"
_SOURCES = {"ollama": "ollama", "node": "hub"}  # backend type -> where its models come from
_SHORT = 12


@dataclasses.dataclass(frozen=True, order=True)
class Source:
    """One thing to ask upstream: ``kind`` ``ollama`` (registry) or ``hub``, and the model."""

    kind: str
    reference: str


@dataclasses.dataclass(frozen=True)
class Latest:
    """The revision upstream has (bare-hex digest or commit), first seen at ``since``."""

    digest: str
    since: dt.datetime


@dataclasses.dataclass(frozen=True)
class Upgrade:
    """``model`` on ``backend`` holds ``current``; upstream has had ``latest`` since ``since``."""

    backend: str
    model: str
    current: str
    latest: str
    since: dt.datetime


def source_of(backend_type: str, model: str) -> Source | None:
    """Where a model reported by a backend of ``backend_type`` comes from; None: nowhere
    llmctl can ask (vLLM servers, cloud providers)."""
    kind = _SOURCES.get(backend_type)
    if kind is None:
        return None
    return Source(kind, str(names.key(model, backend_type)))


def _held(state: snapshot.LLMState) -> Iterable[tuple[snapshot.PulledModel, Source]]:
    """The declared models ``state`` reports with a digest, and their sources."""
    declared = {names.key(m, state.type) for m in state.models}
    for model in state.pulled_models:
        if not model.digest or model.parent or names.key(model.name, state.type) not in declared:
            continue
        source = source_of(state.type, model.name)
        if source is not None:
            yield model, source


def wanted(states: Iterable[snapshot.LLMState]) -> set[Source]:
    """Every source worth asking: a declared model some backend holds."""
    return {source for state in states for _, source in _held(state)}


def available(state: snapshot.LLMState, known: Mapping[Source, Latest]) -> list[Upgrade]:
    """The upgrades available on ``state``'s backend, by model name."""
    found = []
    for model, source in _held(state):
        latest = known.get(source)
        if latest is not None and latest.digest != model.digest:
            found.append(Upgrade(state.name, model.name, model.digest, latest.digest, latest.since))
    return sorted(found, key=lambda u: u.model)


def condition(upgrades: Iterable[Upgrade]) -> snapshot.Condition:
    """``UpdateAvailable`` naming each model: ``qwen2:0.5b: 1a2b3c4d5e6f -> 9f8e7d6c5b4a since
    2026-12-07T00:00:00Z``."""
    lines = [
        f"{u.model}: {u.current[:_SHORT]} -> {u.latest[:_SHORT]} since {_instant(u.since)}"
        for u in upgrades
    ]
    return snapshot.Condition(CONDITION, True, REASON, "; ".join(lines))


def marked(
    states: Mapping[str, snapshot.LLMState], known: Mapping[Source, Latest]
) -> dict[str, snapshot.LLMState]:
    """``states`` with ``UpdateAvailable`` on those holding an old copy (no copy otherwise)."""
    result = dict(states)
    if not known:
        return result
    for name, state in states.items():
        found = available(state, known)
        if found:
            kept = tuple(c for c in state.conditions if c.type != CONDITION)
            result[name] = dataclasses.replace(state, conditions=(*kept, condition(found)))
    return result


def _instant(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
