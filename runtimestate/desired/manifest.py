"""Declarative files: Kubernetes-shaped documents, their validation, diff, apply and export.

Called by ``llmctl apply`` and ``llmctl export``. A file is read and checked whole (its
encoding, every document via `runtimestate.desired.documents`, duplicates, every pool member) before
anything is written; files applied together (``apply -f DIR``) are `combine`d into one manifest
first, an object declared in two of them being a problem. Every problem is listed in one run as
``fleet.yaml: document 3 (Backend gpu-1): spec.maxPulls: ...``; `apply` then writes every change
through the store in the caller's single transaction, so one bad document writes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import desired, echo
from runtimestate.desired import (
    adapterstore,
    documents,
    exports,
    names,
    poolstore,
    sources,
    spec,
    store,
)

API_VERSION = documents.API_VERSION
STDIN = sources.STDIN


class ManifestError(ValueError):
    """A file that cannot be applied; ``problems`` lists every problem found, one a line."""

    def __init__(
        self, problems: Sequence[str], source: str = "the file", undone: str = "applied"
    ) -> None:
        count = len(problems)
        header = f"{source} is not valid, nothing was {undone} ({count} problem"
        header += "):" if count == 1 else "s):"
        super().__init__("\n  ".join([header, *problems]))
        self.problems = tuple(problems)
        self.source = source


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The valid specs of a file, and (from `read`) its documents and the problems found.

    ``origins`` name the file of each document (files read together are `combine`d).
    """

    backends: tuple[spec.BackendSpec, ...]
    models: tuple[spec.ModelSpec, ...]
    pools: tuple[spec.PoolSpec, ...]
    source: str = "the file"
    documents: tuple[documents.Document, ...] = ()
    problems: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    adapters: tuple[spec.AdapterSpec, ...] = ()


class Action(enum.StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclasses.dataclass(frozen=True)
class Change:
    kind: Literal["backend", "model", "pool", "adapter"]
    name: str
    action: Action
    fields: tuple[str, ...] = ()


def read(data: bytes | str, source: str = "the file", *, json: bool = False) -> Manifest:
    """Read and check a whole file (``json``: a JSON one, see `sources`); never raises:
    ``problems`` lists every problem found.

    Pool members that are not in the file are checked by `check`, against the stored state.
    """
    try:
        raws = sources.load(data, json=json)
    except ValueError as exc:
        return Manifest((), (), (), source, (), (f"{source}: {exc}",))
    docs = tuple(documents.read(index, raw) for index, raw in enumerate(raws, start=1))
    problems = [f"{source}: {doc.title}: {problem}" for doc in docs for problem in doc.problems]
    problems += _duplicates(docs, source)
    if not raws:
        problems.append(f"{source}: has no documents (each needs apiVersion: {API_VERSION})")
    values = [doc.value for doc in docs if doc.value is not None]
    return Manifest(
        backends=tuple(v for v in values if isinstance(v, spec.BackendSpec)),
        models=tuple(v for v in values if isinstance(v, spec.ModelSpec)),
        pools=tuple(v for v in values if isinstance(v, spec.PoolSpec)),
        source=source,
        documents=docs,
        problems=tuple(problems),
        origins=(source,) * len(docs),
        adapters=tuple(v for v in values if isinstance(v, spec.AdapterSpec)),
    )


def parse(data: bytes | str, source: str = "the file") -> Manifest:
    """`read`, raising `ManifestError` with every problem found in the file alone."""
    manifest = read(data, source)
    if manifest.problems:
        raise ManifestError(manifest.problems, source)
    return manifest


def read_all(files: Sequence[sources.Source], source: str) -> Manifest:
    """Read files to apply together, as one manifest named ``source`` (see `combine`)."""
    return combine([read(f.data, f.name, json=f.json) for f in files], source)


def combine(manifests: Sequence[Manifest], source: str) -> Manifest:
    """Files applied together: their specs, documents and problems in order, and a problem
    for every object declared in more than one of them, naming each file."""
    return Manifest(
        backends=tuple(b for m in manifests for b in m.backends),
        models=tuple(v for m in manifests for v in m.models),
        pools=tuple(p for m in manifests for p in m.pools),
        source=source,
        documents=tuple(d for m in manifests for d in m.documents),
        problems=tuple(p for m in manifests for p in m.problems) + tuple(_across(manifests)),
        origins=tuple(o for m in manifests for o in _origins(m)),
        adapters=tuple(a for m in manifests for a in m.adapters),
    )


def _origins(manifest: Manifest) -> list[str]:
    """The file of each document; a manifest built without origins names its ``source``."""
    pairs = itertools.zip_longest(manifest.documents, manifest.origins, fillvalue=None)
    return [manifest.source if origin is None else origin for _, origin in pairs]


def _across(manifests: Sequence[Manifest]) -> list[str]:
    """Objects declared in more than one file (twice in one file is `_duplicates`')."""
    found: dict[tuple[str, str], list[tuple[str, documents.Document]]] = {}
    for manifest in manifests:
        for doc, origin in zip(manifest.documents, _origins(manifest), strict=True):
            if doc.kind is not None and doc.name is not None:
                found.setdefault((doc.kind, _key(doc.kind, doc.name)), []).append((origin, doc))
    problems = []
    for (kind, key), same in found.items():
        if len({origin for origin, _ in same}) > 1:
            *first, last = [f"{origin}: document {doc.index}" for origin, doc in same]
            both = "both" if len(same) == 2 else "all"
            problems.append(
                f"{', '.join(first)} and {last} {both} declare {kind} {echo.quoted(key)}; "
                "declare each once, in one file"
            )
    return problems


def _key(kind: str, name: str) -> str:
    """What two declarations are compared by: a model's canonical name, when it has one."""
    return names.key(name, spec.BackendType.OLLAMA) if kind == "Model" else name


def _duplicates(docs: Iterable[documents.Document], source: str) -> list[str]:
    found: dict[tuple[str, str], list[documents.Document]] = {}
    for doc in docs:
        if doc.kind is not None and doc.name is not None:
            found.setdefault((doc.kind, _key(doc.kind, doc.name)), []).append(doc)
    problems = []
    for (kind, key), same in found.items():
        if len(same) > 1:
            *first, last = [str(doc.index) for doc in same]
            spellings = sorted({doc.name for doc in same if doc.name is not None})
            also = "" if len(spellings) == 1 else f" (as {', '.join(map(echo.quoted, spellings))})"
            both = "both" if len(same) == 2 else "all"
            problems.append(
                f"{source}: documents {', '.join(first)} and {last} {both} declare "
                f"{kind} {echo.quoted(key)}{also}; declare each once"
            )
    return problems


def needs_store(manifest: Manifest, prune: bool) -> bool:
    """Whether `check` needs the stored state: a pool member is not in the file, no --prune."""
    return not prune and bool(_dangling(manifest, {}, prune))


def check(manifest: Manifest, current: desired.DesiredState, prune: bool) -> None:
    """Raise `ManifestError` listing the file's problems and every dangling pool member.

    A member must be declared in the file, or (without ``--prune``) already stored.
    """
    known: dict[str, set[str]] = {}
    if not prune:
        known["backend"] = set(current.backends_by_name)
        known["model"] = set(current.models_by_canonical)
        known["adapter"] = set(current.adapters_by_name)
    problems = [*manifest.problems, *_dangling(manifest, known, prune)]
    if problems:
        raise ManifestError(problems, manifest.source)


def _dangling(manifest: Manifest, known: dict[str, set[str]], prune: bool) -> list[str]:
    """Pool members (and adapters' base models) declared neither in the file nor in
    ``known`` (by kind: ``backend``, ``model``, ``adapter``)."""
    for doc in manifest.documents:
        if doc.kind is not None and doc.name is not None:
            known.setdefault(doc.kind.lower(), set()).add(_key(doc.kind, doc.name))
    where = (
        "is not declared in the file (--prune)" if prune else "is neither in the file nor declared"
    )
    problems = []
    for doc, origin in zip(manifest.documents, _origins(manifest), strict=True):
        for kind, member in doc.members:
            field = "spec.baseModel" if doc.kind == "Adapter" else f"spec.{kind}s"
            if _key(kind.title(), member) not in known.get(kind, set()):
                problems.append(
                    f"{origin}: {doc.title}: {field}: {kind} {echo.quoted(member)} {where}"
                )
    return problems


def _fields(old: object, new: object, wire: dict[str, str]) -> tuple[str, ...]:
    return tuple(camel for attr, camel in wire.items() if getattr(old, attr) != getattr(new, attr))


_BACKEND_FIELDS = {
    "type": "type", "url": "url", "labels": "labels", "prune": "prune",
    "max_pulls": "maxPulls", "credentials": "credentials", "vram_bytes": "vramBytes",
    "disk_bytes": "diskBytes",
}  # fmt: skip
_MODEL_FIELDS = {
    "context_length": "contextLength", "capabilities": "capabilities", "labels": "labels",
    "vllm": "vllm", "warm": "warm", "keep_alive": "keepAlive", "update": "updatePolicy",
}  # fmt: skip
_ADAPTER_FIELDS = {
    "base_model": "baseModel", "source": "source", "revision": "revision", "labels": "labels",
}  # fmt: skip
_POOL_FIELDS = ("purpose", "backends", "models", "labels", "adapters")


def _pool_key(value: spec.PoolSpec) -> tuple[object, ...]:
    return (
        value.purpose,
        value.backends,
        frozenset(names.key(m, spec.BackendType.OLLAMA) for m in value.models),
        dict(value.labels),
        value.adapters,
    )


def diff(manifest: Manifest, current: desired.DesiredState, prune: bool) -> list[Change]:
    """What applying ``manifest`` would do to ``current``, object by object."""
    changes: list[Change] = []
    for b in manifest.backends:
        old = current.backend(b.name)
        changes.append(_change("backend", b.name, old and old.spec, b, _BACKEND_FIELDS))
    for m in manifest.models:
        found = current.model(m.name)
        changes.append(_change("model", m.name, found and found.spec, m, _MODEL_FIELDS))
    for a in manifest.adapters:
        stored = current.adapter(a.name)
        changes.append(_change("adapter", a.name, stored and stored.spec, a, _ADAPTER_FIELDS))
    for p in manifest.pools:
        pool = current.pool(p.name)
        if pool is None:
            changes.append(Change("pool", p.name, Action.CREATED))
            continue
        old_key, new_key = _pool_key(pool.spec), _pool_key(p)
        fields = tuple(f for f, a, b in zip(_POOL_FIELDS, old_key, new_key, strict=True) if a != b)
        changes.append(
            Change("pool", p.name, Action.CHANGED if fields else Action.UNCHANGED, fields)
        )
    if prune:
        changes += _deletions(manifest, current)
    return changes


def _change(
    kind: Literal["backend", "model", "adapter"],
    name: str,
    old: object | None,
    new: object,
    wire: dict[str, str],
) -> Change:
    if old is None:
        return Change(kind, name, Action.CREATED)
    fields = _fields(old, new, wire)
    return Change(kind, name, Action.CHANGED if fields else Action.UNCHANGED, fields)


def _deletions(manifest: Manifest, current: desired.DesiredState) -> list[Change]:
    backends = {b.name for b in manifest.backends}
    models = {names.key(m.name, spec.BackendType.OLLAMA) for m in manifest.models}
    pools = {p.name for p in manifest.pools} | {spec.DEFAULT_POOL}
    return (
        [
            Change("backend", b.name, Action.DELETED)
            for b in current.backends
            if b.name not in backends
        ]
        + [
            Change("model", m.name, Action.DELETED)
            for m in current.models
            if names.key(m.name, spec.BackendType.OLLAMA) not in models
        ]
        + [Change("pool", p.name, Action.DELETED) for p in current.pools if p.name not in pools]
        + [
            Change("adapter", a.name, Action.DELETED)
            for a in current.adapters
            if a.name not in {value.name for value in manifest.adapters}
        ]
    )


async def apply(
    session: AsyncSession, manifest: Manifest, *, prune: bool = False, dry_run: bool = False
) -> list[Change]:
    """Bring the stored desired state to ``manifest``; returns the changes, in file order.

    Writes nothing when ``dry_run``. Raises `ManifestError` listing every problem of the file
    and every dangling pool member; the caller's transaction must be rolled back on any error.
    """
    current = await store.load(session)
    check(manifest, current, prune)
    changes = diff(manifest, current, prune)
    if dry_run:
        return changes
    actions: dict[tuple[str, str], Action] = {(c.kind, c.name): c.action for c in changes}
    for change in changes:
        if change.action is Action.DELETED and change.kind == "pool":
            await poolstore.delete_pool(session, change.name)
        elif change.action is Action.DELETED and change.kind == "adapter":
            await adapterstore.delete_adapter(session, change.name)
    for change in changes:
        if change.action is Action.DELETED and change.kind == "backend":
            await store.delete_backend(session, change.name)
        elif change.action is Action.DELETED and change.kind == "model":
            await store.delete_model(session, change.name)
    await _write(session, manifest.backends, actions, "backend")
    await _write(session, manifest.models, actions, "model")
    await _write_adapters(session, manifest.adapters, actions)
    for pool in manifest.pools:
        match actions[("pool", pool.name)]:
            case Action.CREATED:
                await poolstore.create_pool(session, pool)
            case Action.CHANGED:
                await poolstore.update_pool(session, pool)
    return changes


async def _write(
    session: AsyncSession,
    values: Sequence[spec.BackendSpec] | Sequence[spec.ModelSpec],
    actions: Mapping[tuple[str, str], Action],
    kind: Literal["backend", "model"],
) -> None:
    created = [v for v in values if actions[(kind, v.name)] is Action.CREATED]
    changed = [v for v in values if actions[(kind, v.name)] is Action.CHANGED]
    for value in changed:
        if isinstance(value, spec.BackendSpec):
            await store.update_backend(session, value)
        else:
            await store.update_model(session, value)
    if kind == "backend":
        await store.add_backends(session, [v for v in created if isinstance(v, spec.BackendSpec)])
    else:
        await store.add_models(session, [v for v in created if isinstance(v, spec.ModelSpec)])


async def _write_adapters(
    session: AsyncSession,
    values: Sequence[spec.AdapterSpec],
    actions: Mapping[tuple[str, str], Action],
) -> None:
    """After the models (their base models) and before the pools (which place them)."""
    for value in values:
        if actions[("adapter", value.name)] is Action.CHANGED:
            await adapterstore.update_adapter(session, value)
    created = [v for v in values if actions[("adapter", v.name)] is Action.CREATED]
    if created:
        await adapterstore.add_adapters(session, created)


Cut = exports.Cut
export = exports.export
