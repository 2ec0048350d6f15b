"""Deleting what declarative files name: ``llmctl delete -f``.

Called by the CLI (`controller.files`). Of each document only ``kind`` and ``metadata.name``
matter, so any file ``apply`` accepted can be deleted with; every file is read and every
document identified before anything is deleted (`identify` raises `manifest.ManifestError`
listing every problem). `delete` then decides each named object's fate against the stored
state (`plan`, pure) and deletes in the caller's single transaction: pools first, so a pool
that goes is not bumped by its members leaving it, then adapters (before the models they are
based on), then backends and models. The ``default``
pool is never deleted (it is kept, and says so); an object that is not stored is reported,
not an error that stops the others. It must not write anything but through the store modules.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import desired, echo
from runtimestate.desired import (
    adapterstore,
    documents,
    manifest,
    names,
    poolstore,
    sources,
    spec,
    store,
    suggestions,
)

Kind = Literal["backend", "model", "pool", "adapter"]
_KINDS: dict[str, Kind] = {
    "Backend": "backend", "Model": "model", "Pool": "pool", "Adapter": "adapter",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Target:
    """An object a file names: its kind, its name as the file writes it."""

    kind: Kind
    name: str


class Outcome(enum.StrEnum):
    DELETED = "deleted"
    KEPT = "kept"  # the default pool
    NOT_FOUND = "not found"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What deleting ``target`` does; ``close`` are stored names one edit from a missing one."""

    target: Target
    outcome: Outcome
    close: tuple[str, ...] = ()


def identify(files: Sequence[sources.Source], source: str) -> list[Target]:
    """The objects ``files`` name, in file order, each once; raises `manifest.ManifestError`
    (named ``source``) listing every document that does not say what it names."""
    problems: list[str] = []
    targets: dict[tuple[Kind, str], Target] = {}
    for file in files:
        try:
            raws = sources.load(file.data, json=file.json)
        except ValueError as exc:
            problems.append(f"{file.name}: {exc}")
            continue
        if not raws:
            problems.append(f"{file.name}: has no documents (each needs kind and metadata.name)")
        for index, raw in enumerate(raws, start=1):
            found = _target(raw, f"{file.name}: document {index}", problems)
            if found is not None:
                targets.setdefault((found.kind, _key(found)), found)
    if problems:
        raise manifest.ManifestError(problems, source, undone="deleted")
    return list(targets.values())


def _target(raw: Any, where: str, problems: list[str]) -> Target | None:
    if not isinstance(raw, dict):
        problems.append(
            f"{where}: must be a mapping with kind and metadata, not {documents.describe(raw)}"
        )
        return None
    kind, meta = raw.get("kind"), raw.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    known = _KINDS.get(kind) if isinstance(kind, str) else None
    if known is None:
        given = "" if kind is None else f", not {documents.describe(kind)}"
        problems.append(f"{where}: kind: must be one of {'|'.join(documents.KINDS)}{given}")
    if not isinstance(name, str):
        given = (
            "is required" if name is None else f"must be a string, not {documents.describe(name)}"
        )
        problems.append(f"{where}: metadata.name: {given}")
        return None
    if known == "model":
        try:
            names.parse_ollama(name)
        except names.InvalidName as exc:
            problems.append(f"{where} (Model {echo.plain(name)}): metadata.name: {exc}")
            return None
    return None if known is None else Target(known, name)


def _key(target: Target) -> str:
    """What two targets are the same object by: a model's canonical name."""
    if target.kind == "model":
        return names.key(target.name, spec.BackendType.OLLAMA)
    return target.name


def plan(targets: Iterable[Target], current: desired.DesiredState) -> list[Verdict]:
    """The fate of each target against the stored ``current`` state, in the targets' order."""
    stored: dict[Kind, list[str]] = {
        "backend": [b.name for b in current.backends],
        "model": [m.name for m in current.models],
        "pool": [p.name for p in current.pools],
        "adapter": [a.name for a in current.adapters],
    }
    verdicts = []
    for target in targets:
        if target.kind == "pool" and target.name == spec.DEFAULT_POOL:
            verdicts.append(Verdict(target, Outcome.KEPT))
        elif _exists(target, current):
            verdicts.append(Verdict(target, Outcome.DELETED))
        else:
            close = store.missing(target.kind, target.name, stored[target.kind]).close
            verdicts.append(Verdict(target, Outcome.NOT_FOUND, close))
    return verdicts


def _exists(target: Target, current: desired.DesiredState) -> bool:
    match target.kind:
        case "backend":
            return current.backend(target.name) is not None
        case "model":
            return current.model(target.name) is not None
        case "pool":
            return current.pool(target.name) is not None
        case "adapter":
            return current.adapter(target.name) is not None


async def delete(
    session: AsyncSession, targets: Sequence[Target], *, dry_run: bool = False
) -> list[Verdict]:
    """Delete every stored target (pools first) unless ``dry_run``; returns every verdict.

    Objects not stored and the default pool are left alone. The caller owns the transaction
    and must roll it back on any error."""
    verdicts = plan(targets, await store.load(session))
    if dry_run:
        return verdicts
    gone = [v.target for v in verdicts if v.outcome is Outcome.DELETED]
    for target in gone:
        if target.kind == "pool":
            await poolstore.delete_pool(session, target.name)
    for target in gone:  # before the models they are based on
        if target.kind == "adapter":
            await adapterstore.delete_adapter(session, target.name)
    for target in gone:
        if target.kind == "backend":
            await store.delete_backend(session, target.name)
        elif target.kind == "model":
            await store.delete_model(session, target.name)
    return verdicts


def message(verdict: Verdict) -> str:
    """The line a verdict is reported with: ``backend/gpu-1 not found; did you mean ...``."""
    target = verdict.target
    line = f"{target.kind}/{echo.plain(target.name)} {verdict.outcome.value}"
    if verdict.outcome is Outcome.KEPT:
        return f"{line} (the default pool is never deleted)"
    if verdict.close:
        return f"{line}; {suggestions.phrase(verdict.close)}"
    return line
