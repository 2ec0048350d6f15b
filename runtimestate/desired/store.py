"""The desired-state store: async functions over backends, models, pools and memberships.

Called by the CLI, the manifest (apply) and the backend cycle. Every function takes an
``AsyncSession`` and never commits: the caller owns the transaction, so a command that fails
half-way writes nothing. ORM rows stay inside this module; callers get `runtimestate.desired.spec`
values. Specs are validated here too, so no path can store a bad value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import desired, echo
from runtimestate.desired import names, schema, spec

_POOL_BACKENDS = sa.Table("pool_backends", schema.metadata)  # the membership tables, as Core
_POOL_MODELS = sa.Table("pool_models", schema.metadata)


class StoreError(ValueError):
    """A request the stored state refuses; the message names the object and the fix."""


class NotFound(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {echo.quoted(name)} does not exist; see llmctl {kind} list")
        self.kind, self.name = kind, name


class AlreadyExists(StoreError):
    def __init__(self, kind: str, name: str, existing: str | None = None) -> None:
        same = f" (as {echo.quoted(existing)})" if existing and existing != name else ""
        super().__init__(
            f"{kind} {echo.quoted(name)} already exists{same}; "
            f"use llmctl {kind} update or pick another name"
        )
        self.kind, self.name = kind, name


def _meta(row: schema.BackendRow | schema.ModelRow | schema.PoolRow) -> spec.Meta:
    return spec.Meta(row.id, row.generation, row.created_at, row.updated_at)


def _credentials(row: schema.BackendRow) -> spec.Credentials | None:
    if row.credential_kind is None:
        return None
    return spec.Credentials(
        kind=spec.CredentialKind(row.credential_kind),
        env_var=row.credential_env,
        ciphertext=row.credential_ciphertext,
    )


def _backend(row: schema.BackendRow) -> spec.Backend:
    value = spec.BackendSpec(
        name=row.name,
        type=spec.BackendType(row.type),
        url=row.base_url,
        labels=dict(row.labels),
        prune=spec.PrunePolicy(row.prune),
        max_pulls=row.max_pulls,
        credentials=_credentials(row),
    )
    return spec.Backend(value, _meta(row))


def _model(row: schema.ModelRow) -> spec.Model:
    caps = None if row.capabilities is None else tuple(spec.Capability(c) for c in row.capabilities)
    value = spec.ModelSpec(row.name, row.context_length, caps)
    return spec.Model(value, _meta(row))


def _fill_backend(row: schema.BackendRow, value: spec.BackendSpec) -> None:
    row.name, row.type, row.base_url = value.name, value.type.value, value.url
    row.labels, row.prune, row.max_pulls = dict(value.labels), value.prune.value, value.max_pulls
    creds = value.credentials
    if creds is None:
        row.credential_kind = row.credential_env = row.credential_ciphertext = None
        return
    if creds.kind is spec.CredentialKind.ENCRYPTED and creds.ciphertext is None:
        if row.credential_kind != spec.CredentialKind.ENCRYPTED.value:
            raise StoreError(
                f"backend {value.name!r} has no stored key to keep; "
                f"set one with llmctl backend update {value.name} --api-key-stdin"
            )
        return
    row.credential_kind, row.credential_env = creds.kind.value, creds.env_var
    row.credential_ciphertext = creds.ciphertext


def _touch(row: schema.BackendRow | schema.ModelRow | schema.PoolRow) -> None:
    row.generation += 1
    row.updated_at = schema.utcnow()


# --- reading ---------------------------------------------------------------------------------


async def load(session: AsyncSession) -> desired.DesiredState:
    """Read the whole desired state in five queries, whatever the fleet size."""
    backend_rows = (await session.scalars(sa.select(schema.BackendRow))).all()
    model_rows = (await session.scalars(sa.select(schema.ModelRow))).all()
    pool_rows = (await session.scalars(sa.select(schema.PoolRow))).all()
    pool_backends = (await session.execute(sa.select(_POOL_BACKENDS))).all()
    pool_models = (await session.execute(sa.select(_POOL_MODELS))).all()
    backend_names = {row.id: row.name for row in backend_rows}
    model_names = {row.id: row.name for row in model_rows}
    model_keys = {row.id: names.key(row.name, spec.BackendType.OLLAMA) for row in model_rows}
    pool_names = {row.id: row.name for row in pool_rows}
    members_b: dict[int, list[str]] = {}
    members_m: dict[int, list[str]] = {}
    backends_joined: dict[tuple[str, str], int] = {}
    models_joined: dict[tuple[str, names.ModelKey], int] = {}
    # Under READ COMMITTED a membership may name a row committed after the first query; it is
    # skipped here (callers that need one snapshot use `database.read_snapshot`).
    for pool_id, backend_id, joined in pool_backends:
        if backend_id in backend_names and pool_id in pool_names:
            members_b.setdefault(pool_id, []).append(backend_names[backend_id])
            backends_joined[pool_names[pool_id], backend_names[backend_id]] = joined
    for pool_id, model_id, joined in pool_models:
        if model_id in model_names and pool_id in pool_names:
            members_m.setdefault(pool_id, []).append(model_names[model_id])
            models_joined[pool_names[pool_id], model_keys[model_id]] = joined
    pools = tuple(
        spec.Pool(
            spec.PoolSpec(
                row.name,
                row.purpose,
                tuple(sorted(members_b.get(row.id, []))),
                tuple(sorted(members_m.get(row.id, []))),
            ),
            _meta(row),
        )
        for row in sorted(pool_rows, key=lambda r: r.name)
    )
    return desired.DesiredState(
        backends=tuple(_backend(row) for row in sorted(backend_rows, key=lambda r: r.name)),
        models=tuple(_model(row) for row in sorted(model_rows, key=lambda r: r.name)),
        pools=pools,
        backends_joined=backends_joined,
        models_joined=models_joined,
    )


async def _backend_row(session: AsyncSession, name: str) -> schema.BackendRow:
    row = await session.scalar(sa.select(schema.BackendRow).where(schema.BackendRow.name == name))
    if row is None:
        raise NotFound("backend", name)
    return row


async def _model_row(session: AsyncSession, name: str) -> schema.ModelRow:
    key = names.key(spec.model_name(name), spec.BackendType.OLLAMA)
    row = await session.scalar(
        sa.select(schema.ModelRow).where(schema.ModelRow.canonical_name == key)
    )
    if row is None:
        raise NotFound("model", name)
    return row


async def _pool_row(session: AsyncSession, name: str) -> schema.PoolRow:
    row = await session.scalar(sa.select(schema.PoolRow).where(schema.PoolRow.name == name))
    if row is None:
        raise NotFound("pool", name)
    return row


async def get_backend(session: AsyncSession, name: str) -> spec.Backend:
    """The stored backend; raises `NotFound`."""
    return _backend(await _backend_row(session, name))


async def get_model(session: AsyncSession, name: str) -> spec.Model:
    """The stored model ``name`` denotes (``llama3`` finds ``llama3:latest``); raises `NotFound`."""
    return _model(await _model_row(session, name))


# --- writing backends and models ---------------------------------------------------------------


async def add_backend(
    session: AsyncSession, value: spec.BackendSpec, pools: Sequence[str] = (spec.DEFAULT_POOL,)
) -> spec.Backend:
    """Create a backend at generation 1 and join it to ``pools``.

    Raises `SpecError` for an invalid spec, `AlreadyExists`, or `NotFound` for a missing pool.
    """
    value = spec.validate_backend(value)
    if await session.scalar(
        sa.select(schema.BackendRow.id).where(schema.BackendRow.name == value.name)
    ):
        raise AlreadyExists("backend", value.name)
    pool_rows = [await _pool_row(session, pool) for pool in dict.fromkeys(pools)]
    row = schema.BackendRow()
    _fill_backend(row, value)
    session.add(row)
    await session.flush()
    for pool in pool_rows:
        _touch(pool)
        session.add(
            schema.PoolBackendRow(
                pool_id=pool.id, backend_id=row.id, joined_generation=pool.generation
            )
        )
    await session.flush()
    return _backend(row)


async def add_backends(session: AsyncSession, values: Sequence[spec.BackendSpec]) -> None:
    """Create many backends in no pool with one check and one insert (used by apply).

    Raises `SpecError` or `AlreadyExists` before writing anything.
    """
    values = [spec.validate_backend(value) for value in values]
    wanted = [value.name for value in values]
    taken = await session.scalars(
        sa.select(schema.BackendRow.name).where(schema.BackendRow.name.in_(wanted))
    )
    for name in taken:
        raise AlreadyExists("backend", name)
    rows = []
    for value in values:
        row = schema.BackendRow()
        _fill_backend(row, value)
        rows.append(row)
    session.add_all(rows)
    await session.flush()


async def update_backend(
    session: AsyncSession, value: spec.BackendSpec, pools: Sequence[str] | None = None
) -> tuple[spec.Backend, bool]:
    """Replace the spec of backend ``value.name``; set its pools exactly when ``pools`` is given.

    The generation goes up only when the spec really changed (a new stored key counts).
    Returns the backend and whether anything changed. Raises `SpecError` or `NotFound`.
    """
    value = spec.validate_backend(value)
    row = await _backend_row(session, value.name)
    before = _backend(row).spec
    new_key = value.credentials is not None and value.credentials.ciphertext is not None
    _fill_backend(row, value)
    changed = before != _backend(row).spec or new_key
    if changed:
        _touch(row)
    if pools is not None:
        changed = await _set_backend_pools(session, row.id, pools) or changed
    await session.flush()
    return _backend(row), changed


async def _set_backend_pools(session: AsyncSession, backend_id: int, pools: Sequence[str]) -> bool:
    return await _set_pools(session, _POOL_BACKENDS, "backend_id", backend_id, pools)


async def _set_pools(
    session: AsyncSession, table: sa.Table, column: str, member_id: int, pools: Sequence[str]
) -> bool:
    """Make a backend or model a member of exactly ``pools``; bump the pools that changed and
    date each new membership with its pool's generation after the bump."""
    wanted = {(await _pool_row(session, name)).id for name in pools}
    member = table.c[column] == member_id
    current = set((await session.scalars(sa.select(table.c.pool_id).where(member))).all())
    gone = current - wanted
    if gone:
        await session.execute(sa.delete(table).where(member, table.c.pool_id.in_(gone)))
    await _touch_pools(session, current ^ wanted)
    for pool_id in wanted - current:
        generation = (
            sa.select(schema.PoolRow.generation)
            .where(schema.PoolRow.id == pool_id)
            .scalar_subquery()
        )
        await session.execute(
            sa.insert(table).values(
                {"pool_id": pool_id, column: member_id, "joined_generation": generation}
            )
        )
    return current != wanted


async def _touch_pools(session: AsyncSession, pool_ids: Iterable[int]) -> None:
    ids = list(pool_ids)
    if ids:
        await session.execute(
            sa.update(schema.PoolRow)
            .where(schema.PoolRow.id.in_(ids))
            .values(generation=schema.PoolRow.generation + 1, updated_at=schema.utcnow())
        )


async def delete_backend(session: AsyncSession, name: str) -> None:
    """Delete a backend and its memberships. Its download jobs are collected by the next cycle."""
    row = await _backend_row(session, name)
    table = schema.PoolBackendRow
    pool_ids = (
        await session.scalars(sa.select(table.pool_id).where(table.backend_id == row.id))
    ).all()
    await session.execute(sa.delete(table).where(table.backend_id == row.id))
    await _touch_pools(session, pool_ids)
    await session.delete(row)
    await session.flush()


async def add_model(
    session: AsyncSession, value: spec.ModelSpec, pools: Sequence[str] = (spec.DEFAULT_POOL,)
) -> spec.Model:
    """Create a model at generation 1 and join it to ``pools``.

    Raises `SpecError`, `AlreadyExists` (also for the same model under another spelling, such
    as ``llama3`` beside ``llama3:latest``) or `NotFound` for a missing pool.
    """
    value = spec.validate_model(value)
    key = names.key(value.name, spec.BackendType.OLLAMA)
    existing = await session.scalar(
        sa.select(schema.ModelRow.name).where(schema.ModelRow.canonical_name == key)
    )
    if existing is not None:
        raise AlreadyExists("model", value.name, existing)
    pool_rows = [await _pool_row(session, pool) for pool in dict.fromkeys(pools)]
    row = schema.ModelRow(name=value.name, canonical_name=key)
    _fill_model(row, value)
    session.add(row)
    await session.flush()
    for pool in pool_rows:
        _touch(pool)
        session.add(
            schema.PoolModelRow(pool_id=pool.id, model_id=row.id, joined_generation=pool.generation)
        )
    await session.flush()
    return _model(row)


async def add_models(session: AsyncSession, values: Sequence[spec.ModelSpec]) -> None:
    """Create many models in no pool with one check and one insert (used by apply)."""
    values = [spec.validate_model(value) for value in values]
    # By the stored column's value: the rows found below come back as plain strings.
    keys: dict[str, spec.ModelSpec] = {
        names.key(value.name, spec.BackendType.OLLAMA): value for value in values
    }
    taken = await session.execute(
        sa.select(schema.ModelRow.canonical_name, schema.ModelRow.name).where(
            schema.ModelRow.canonical_name.in_(list(keys))
        )
    )
    for key, existing in taken:
        raise AlreadyExists("model", keys[key].name, existing)
    rows = []
    for key, value in keys.items():
        row = schema.ModelRow(name=value.name, canonical_name=key)
        _fill_model(row, value)
        rows.append(row)
    session.add_all(rows)
    await session.flush()


def _fill_model(row: schema.ModelRow, value: spec.ModelSpec) -> None:
    row.context_length = value.context_length
    row.capabilities = None if value.capabilities is None else [c.value for c in value.capabilities]


async def update_model(
    session: AsyncSession, value: spec.ModelSpec, pools: Sequence[str] | None = None
) -> tuple[spec.Model, bool]:
    """Replace a model's overrides, and its pools exactly when ``pools`` is given.

    The model keeps the spelling it was declared with; the generation goes up only on a real
    change. Returns the model and whether anything changed.
    """
    value = spec.validate_model(value)
    row = await _model_row(session, value.name)
    before = _model(row).spec
    _fill_model(row, value)
    changed = before != _model(row).spec
    if changed:
        _touch(row)
    if pools is not None:
        changed = await _set_pools(session, _POOL_MODELS, "model_id", row.id, pools) or changed
    await session.flush()
    return _model(row), changed


async def delete_model(session: AsyncSession, name: str) -> None:
    row = await _model_row(session, name)
    table = schema.PoolModelRow
    pool_ids = (
        await session.scalars(sa.select(table.pool_id).where(table.model_id == row.id))
    ).all()
    await session.execute(sa.delete(table).where(table.model_id == row.id))
    await _touch_pools(session, pool_ids)
    await session.delete(row)
    await session.flush()


# --- pools -----------------------------------------------------------------------------------


async def create_pool(session: AsyncSession, value: spec.PoolSpec) -> spec.Pool:
    """Create a pool with the members its spec lists; raises `AlreadyExists` or `NotFound`."""
    value = spec.validate_pool(value)
    if await session.scalar(sa.select(schema.PoolRow.id).where(schema.PoolRow.name == value.name)):
        raise AlreadyExists("pool", value.name)
    row = schema.PoolRow(name=value.name, purpose=value.purpose)
    session.add(row)
    await session.flush()
    await _set_members(session, row, value, joined=row.generation)
    return await get_pool(session, value.name)


async def update_pool(session: AsyncSession, value: spec.PoolSpec) -> tuple[spec.Pool, bool]:
    """Set a pool's purpose and members exactly as ``value`` says."""
    value = spec.validate_pool(value)
    before = await get_pool(session, value.name)
    row = await _pool_row(session, value.name)
    row.purpose = value.purpose
    # A member joins only in a write that changes the spec, which bumps the generation below.
    await _set_members(session, row, value, joined=row.generation + 1)
    after = await get_pool(session, value.name)
    changed = before.spec != after.spec
    if changed:
        _touch(row)
        await session.flush()
        after = await get_pool(session, value.name)
    return after, changed


async def _ids(
    session: AsyncSession, column: sa.orm.InstrumentedAttribute[str], keys: Sequence[str], kind: str
) -> dict[str, int]:
    """Map names (or canonical model names) to row ids in one query; raises `NotFound`."""
    table = column.class_
    rows = await session.execute(sa.select(column, table.id).where(column.in_(keys)))
    found: dict[str, int] = {name: row_id for name, row_id in rows}
    for key in keys:
        if key not in found:
            raise NotFound(kind, key)
    return found


async def _set_members(
    session: AsyncSession, row: schema.PoolRow, value: spec.PoolSpec, *, joined: int
) -> None:
    """Make the pool's memberships exactly ``value``'s members. Memberships that stay are left
    untouched (they keep their `joined_generation`); new ones are dated ``joined``."""
    backend_ids = await _ids(session, schema.BackendRow.name, value.backends, "backend")
    keys: dict[str, str] = {names.key(m, spec.BackendType.OLLAMA): m for m in value.models}
    try:
        model_ids = await _ids(session, schema.ModelRow.canonical_name, list(keys), "model")
    except NotFound as exc:
        raise NotFound("model", keys[exc.name]) from None
    for table, column, wanted in (
        (_POOL_BACKENDS, "backend_id", set(backend_ids.values())),
        (_POOL_MODELS, "model_id", set(model_ids.values())),
    ):
        of_pool = table.c.pool_id == row.id
        current = set((await session.scalars(sa.select(table.c[column]).where(of_pool))).all())
        gone = current - wanted
        if gone:
            await session.execute(sa.delete(table).where(of_pool, table.c[column].in_(gone)))
        if wanted - current:
            await session.execute(
                sa.insert(table),
                [
                    {"pool_id": row.id, column: member, "joined_generation": joined}
                    for member in sorted(wanted - current)
                ],
            )
    await session.flush()


async def get_pool(session: AsyncSession, name: str) -> spec.Pool:
    row = await _pool_row(session, name)
    backends = await session.scalars(
        sa.select(schema.BackendRow.name)
        .join(schema.PoolBackendRow, schema.PoolBackendRow.backend_id == schema.BackendRow.id)
        .where(schema.PoolBackendRow.pool_id == row.id)
    )
    models = await session.scalars(
        sa.select(schema.ModelRow.name)
        .join(schema.PoolModelRow, schema.PoolModelRow.model_id == schema.ModelRow.id)
        .where(schema.PoolModelRow.pool_id == row.id)
    )
    value = spec.PoolSpec(row.name, row.purpose, tuple(sorted(backends)), tuple(sorted(models)))
    return spec.Pool(value, _meta(row))


async def delete_pool(session: AsyncSession, name: str) -> None:
    """Delete a pool and its memberships (not its backends or models).

    The ``default`` pool cannot be deleted: ``backend add`` and ``model add`` rely on it.
    """
    if name == spec.DEFAULT_POOL:
        raise StoreError("the default pool cannot be deleted; remove its members instead")
    row = await _pool_row(session, name)
    await session.execute(
        sa.delete(schema.PoolBackendRow).where(schema.PoolBackendRow.pool_id == row.id)
    )
    await session.execute(
        sa.delete(schema.PoolModelRow).where(schema.PoolModelRow.pool_id == row.id)
    )
    await session.delete(row)
    await session.flush()


async def set_membership(
    session: AsyncSession,
    pool: str,
    *,
    backend: str | None = None,
    model: str | None = None,
    member: bool,
) -> bool:
    """Add (``member=True``) or remove one backend or model of a pool. Idempotent.

    Returns whether anything changed; the pool's generation goes up when it did.
    """
    current = await get_pool(session, pool)
    if backend is not None:
        await _backend_row(session, backend)
        members = set(current.spec.backends)
        members = members | {backend} if member else members - {backend}
        value = dataclasses.replace(current.spec, backends=tuple(members))
    else:
        assert model is not None
        row = await _model_row(session, model)
        members = set(current.spec.models)
        members = members | {row.name} if member else members - {row.name}
        value = dataclasses.replace(current.spec, models=tuple(members))
    _, changed = await update_pool(session, value)
    return changed
