"""Declarative files: Kubernetes-shaped documents, their validation, diff, apply and export.

Called by ``llmctl apply`` and ``llmctl export``. A file is parsed and validated whole (every
document, every cross reference) before anything is written; `apply` then writes every change
through the store in the caller's single transaction, so one bad document writes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import desired, echo, names, spec, store

API_VERSION = "llmctl/v1"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ValueError):
    """A file that cannot be applied; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class _Metadata(_Strict):
    name: str
    labels: dict[str, str] = {}


class _CredentialsDoc(_Strict):
    env: str | None = None
    encrypted: Literal[True] | None = None


class _BackendDoc(_Strict):
    type: str
    url: str
    prune: str = "managed"
    maxPulls: int = 1
    credentials: _CredentialsDoc | None = None


class _ModelDoc(_Strict):
    contextLength: int | None = None
    capabilities: list[str] | None = None


class _PoolDoc(_Strict):
    purpose: str = ""
    backends: list[str] = []
    models: list[str] = []


class _Document(_Strict):
    apiVersion: Literal["llmctl/v1"]
    kind: Literal["Backend", "Model", "Pool"]
    metadata: _Metadata
    spec: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class Manifest:
    backends: tuple[spec.BackendSpec, ...]
    models: tuple[spec.ModelSpec, ...]
    pools: tuple[spec.PoolSpec, ...]


class Action(enum.StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclasses.dataclass(frozen=True)
class Change:
    kind: Literal["backend", "model", "pool"]
    name: str
    action: Action
    fields: tuple[str, ...] = ()


def _location(index: int, raw: Any) -> str:
    if isinstance(raw, dict):
        kind = raw.get("kind", "?")
        meta = raw.get("metadata")
        name = meta.get("name", "?") if isinstance(meta, dict) else "?"
        return f"document {index} ({echo.plain(str(kind))} {echo.plain(str(name))})"
    return f"document {index}"


def _pydantic_problems(where: str, exc: pydantic.ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "document"
        problems.append(f"{where}: {field}: {error['msg']}")
    return problems


def _credentials(doc: _CredentialsDoc | None) -> spec.Credentials | None:
    if doc is None:
        return None
    if (doc.env is None) == (doc.encrypted is None):
        raise spec.SpecError("credentials", "give exactly one of env: VAR or encrypted: true")
    if doc.env is not None:
        return spec.Credentials(spec.CredentialKind.ENV, env_var=spec.env_var(doc.env))
    return spec.Credentials(spec.CredentialKind.ENCRYPTED)


def _to_spec(doc: _Document) -> spec.BackendSpec | spec.ModelSpec | spec.PoolSpec:
    name, labels = doc.metadata.name, doc.metadata.labels
    if doc.kind != "Backend" and labels:
        raise spec.SpecError("metadata.labels", "labels are supported on Backend documents only")
    if doc.kind == "Backend":
        b = _BackendDoc.model_validate(doc.spec)
        value = spec.BackendSpec(
            name, spec.backend_type(b.type), b.url, labels, spec.prune_policy(b.prune),
            b.maxPulls, _credentials(b.credentials),
        )  # fmt: skip
        return spec.validate_backend(value)
    if doc.kind == "Model":
        m = _ModelDoc.model_validate(doc.spec)
        return spec.validate_model(
            spec.ModelSpec(name, m.contextLength, spec.capabilities(m.capabilities))
        )
    p = _PoolDoc.model_validate(doc.spec)
    return spec.validate_pool(spec.PoolSpec(name, p.purpose, tuple(p.backends), tuple(p.models)))


def parse(text: str) -> Manifest:
    """Parse and validate every document of a file; raises `ManifestError` listing every problem."""
    try:
        # libyaml when it is there: the pure-Python loader takes seconds per megabyte.
        raws = [raw for raw in yaml.load_all(text, Loader=_LOADER) if raw is not None]
    except yaml.YAMLError as exc:
        raise ManifestError([f"the file is not valid YAML: {exc}"]) from None
    problems: list[str] = []
    values: list[spec.BackendSpec | spec.ModelSpec | spec.PoolSpec] = []
    for index, raw in enumerate(raws, start=1):
        where = _location(index, raw)
        try:
            values.append(_to_spec(_Document.model_validate(raw)))
        except pydantic.ValidationError as exc:
            problems.extend(_pydantic_problems(where, exc))
        except spec.SpecError as exc:
            problems.append(f"{where}: {exc}")
    if not raws:
        problems.append(f"the file has no documents (each needs apiVersion: {API_VERSION})")
    manifest = Manifest(
        backends=tuple(v for v in values if isinstance(v, spec.BackendSpec)),
        models=tuple(v for v in values if isinstance(v, spec.ModelSpec)),
        pools=tuple(v for v in values if isinstance(v, spec.PoolSpec)),
    )
    problems.extend(_duplicates(manifest))
    if problems:
        raise ManifestError(problems)
    return manifest


def _duplicates(manifest: Manifest) -> list[str]:
    problems = []
    for kind, keys in (
        ("Backend", [b.name for b in manifest.backends]),
        ("Model", [names.canonical_ollama(m.name) for m in manifest.models]),
        ("Pool", [p.name for p in manifest.pools]),
    ):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                problems.append(f"{kind} {echo.quoted(key)} is declared more than once in the file")
            seen.add(key)
    return problems


def check_references(manifest: Manifest, current: desired.DesiredState, prune: bool) -> None:
    """Every pool member must be declared in the file, or (without ``--prune``) already stored."""
    backends = {b.name for b in manifest.backends}
    models = {names.canonical_ollama(m.name) for m in manifest.models}
    if not prune:
        backends |= set(current.backends_by_name)
        models |= set(current.models_by_canonical)
    problems = []
    for pool in manifest.pools:
        problems += [
            f"Pool {echo.quoted(pool.name)}: backend {echo.quoted(b)} "
            "is neither in the file nor declared"
            for b in pool.backends
            if b not in backends
        ]
        problems += [
            f"Pool {echo.quoted(pool.name)}: model {echo.quoted(m)} "
            "is neither in the file nor declared"
            for m in pool.models
            if names.canonical_ollama(m) not in models
        ]
    if problems:
        raise ManifestError(problems)


def _fields(old: object, new: object, wire: dict[str, str]) -> tuple[str, ...]:
    return tuple(camel for attr, camel in wire.items() if getattr(old, attr) != getattr(new, attr))


_BACKEND_FIELDS = {
    "type": "type", "url": "url", "labels": "labels", "prune": "prune",
    "max_pulls": "maxPulls", "credentials": "credentials",
}  # fmt: skip
_MODEL_FIELDS = {"context_length": "contextLength", "capabilities": "capabilities"}


def _pool_key(value: spec.PoolSpec) -> tuple[str, tuple[str, ...], frozenset[str]]:
    return value.purpose, value.backends, frozenset(names.canonical_ollama(m) for m in value.models)


def diff(manifest: Manifest, current: desired.DesiredState, prune: bool) -> list[Change]:
    """What applying ``manifest`` would do to ``current``, object by object."""
    changes: list[Change] = []
    for b in manifest.backends:
        old = current.backend(b.name)
        changes.append(_change("backend", b.name, old and old.spec, b, _BACKEND_FIELDS))
    for m in manifest.models:
        found = current.model(m.name)
        changes.append(_change("model", m.name, found and found.spec, m, _MODEL_FIELDS))
    for p in manifest.pools:
        pool = current.pool(p.name)
        if pool is None:
            changes.append(Change("pool", p.name, Action.CREATED))
            continue
        old_key, new_key = _pool_key(pool.spec), _pool_key(p)
        fields = tuple(
            f
            for f, a, b in zip(("purpose", "backends", "models"), old_key, new_key, strict=True)
            if a != b
        )
        changes.append(
            Change("pool", p.name, Action.CHANGED if fields else Action.UNCHANGED, fields)
        )
    if prune:
        changes += _deletions(manifest, current)
    return changes


def _change(
    kind: Literal["backend", "model"],
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
    models = {names.canonical_ollama(m.name) for m in manifest.models}
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
            if names.canonical_ollama(m.name) not in models
        ]
        + [Change("pool", p.name, Action.DELETED) for p in current.pools if p.name not in pools]
    )


async def apply(
    session: AsyncSession, manifest: Manifest, *, prune: bool = False, dry_run: bool = False
) -> list[Change]:
    """Bring the stored desired state to ``manifest``; returns the changes, in file order.

    Writes nothing when ``dry_run``. Raises `ManifestError` for dangling references; the
    caller's transaction must be rolled back on any error.
    """
    current = await store.load(session)
    check_references(manifest, current, prune)
    changes = diff(manifest, current, prune)
    if dry_run:
        return changes
    actions: dict[tuple[str, str], Action] = {(c.kind, c.name): c.action for c in changes}
    for change in changes:
        if change.action is Action.DELETED and change.kind == "pool":
            await store.delete_pool(session, change.name)
    for change in changes:
        if change.action is Action.DELETED and change.kind == "backend":
            await store.delete_backend(session, change.name)
        elif change.action is Action.DELETED and change.kind == "model":
            await store.delete_model(session, change.name)
    await _write(session, manifest.backends, actions, "backend")
    await _write(session, manifest.models, actions, "model")
    for pool in manifest.pools:
        match actions[("pool", pool.name)]:
            case Action.CREATED:
                await store.create_pool(session, pool)
            case Action.CHANGED:
                await store.update_pool(session, pool)
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


def export(state: desired.DesiredState) -> str:
    """The desired state as an apply-able file; applying it changes nothing. Never a key."""
    docs: list[dict[str, Any]] = []
    for backend in state.backends:
        b = backend.spec
        body: dict[str, Any] = {
            "type": b.type.value,
            "url": b.url,
            "prune": b.prune.value,
            "maxPulls": b.max_pulls,
        }
        if b.credentials is not None:
            body["credentials"] = (
                {"env": b.credentials.env_var}
                if b.credentials.kind is spec.CredentialKind.ENV
                else {"encrypted": True}
            )
        meta: dict[str, Any] = {"name": b.name}
        if b.labels:
            meta["labels"] = dict(b.labels)
        docs.append(_doc("Backend", meta, body))
    for model in state.models:
        m = model.spec
        body = {}
        if m.context_length is not None:
            body["contextLength"] = m.context_length
        if m.capabilities is not None:
            body["capabilities"] = [c.value for c in m.capabilities]
        docs.append(_doc("Model", {"name": m.name}, body))
    for pool in state.pools:
        p = pool.spec
        body = {"purpose": p.purpose, "backends": list(p.backends), "models": list(p.models)}
        docs.append(_doc("Pool", {"name": p.name}, body))
    return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)


def _doc(kind: str, meta: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": body}
