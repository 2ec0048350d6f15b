"""The desired-state store: the whole desired state read at once, and backends and models.

Called by the CLI, the manifest (apply), the backend cycle and the resolver's mirror. Every
function takes an ``AsyncSession`` and never commits: the caller owns the transaction, so a
command that fails half-way writes nothing. Specs are validated here, so no path can store a bad
value. It also holds what the other store modules share: the store's errors, finding a row by
name and turning a row into its `runtimestate.desired.spec` value. Pools live in `poolstore`;
membership rows are written by `memberships` only. ORM rows must not leave the store modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import credentials, desired, echo
from runtimestate.desired import (
    adapterrows,
    engineargs,
    memberships,
    names,
    refusals,
    residency,
    schema,
    spec,
    updatepolicy,
)

# The errors live in `refusals`; callers name them through the store, as before.
StoreError, NotFound, AlreadyExists = refusals.StoreError, refusals.NotFound, refusals.AlreadyExists
missing, absent = refusals.missing, refusals.absent


Row = schema.BackendRow | schema.ModelRow | schema.PoolRow | schema.AdapterRow
meta = adapterrows.meta


def _credentials(row: schema.BackendRow) -> credentials.Credentials | None:
    if row.credential_kind is None:
        return None
    return credentials.Credentials(
        kind=credentials.CredentialKind(row.credential_kind),
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
        vram_bytes=row.vram_bytes,
        disk_bytes=row.disk_bytes,
    )
    return spec.Backend(value, meta(row))


def _model(row: schema.ModelRow) -> spec.Model:
    caps = None if row.capabilities is None else tuple(spec.Capability(c) for c in row.capabilities)
    vllm = None if row.vllm is None else engineargs.from_document(row.vllm)
    update = updatepolicy.Rollout(updatepolicy.policy(row.update_policy), row.max_unavailable)
    value = spec.ModelSpec(
        row.name, row.context_length, caps, dict(row.labels), vllm, row.warm, row.keep_alive,
        update,
    )  # fmt: skip
    return spec.Model(value, meta(row))


def _fill_backend(row: schema.BackendRow, value: spec.BackendSpec) -> None:
    row.name, row.type, row.base_url = value.name, value.type.value, value.url
    row.labels, row.prune, row.max_pulls = dict(value.labels), value.prune.value, value.max_pulls
    row.vram_bytes, row.disk_bytes = value.vram_bytes, value.disk_bytes
    creds = value.credentials
    if creds is None:
        row.credential_kind = row.credential_env = row.credential_ciphertext = None
        return
    if creds.kind is credentials.CredentialKind.ENCRYPTED and creds.ciphertext is None:
        if row.credential_kind != credentials.CredentialKind.ENCRYPTED.value:
            raise StoreError(
                f"backend {value.name!r} has no stored key to keep; "
                f"set one with llmctl backend update {value.name} --api-key-stdin"
            )
        return
    row.credential_kind, row.credential_env = creds.kind.value, creds.env_var
    row.credential_ciphertext = creds.ciphertext


def touch(row: Row) -> None:
    row.generation += 1
    row.updated_at = schema.utcnow()


# --- reading ---------------------------------------------------------------------------------


async def load(session: AsyncSession) -> desired.DesiredState:
    """Read the whole desired state in seven queries, whatever the fleet size."""
    backend_rows = (await session.scalars(sa.select(schema.BackendRow))).all()
    model_rows = (await session.scalars(sa.select(schema.ModelRow))).all()
    pool_rows = (await session.scalars(sa.select(schema.PoolRow))).all()
    pb, pm = schema.PoolBackendRow, schema.PoolModelRow
    pool_backends = (
        await session.execute(sa.select(pb.pool_id, pb.backend_id, pb.joined_generation))
    ).all()
    pool_models = (
        await session.execute(sa.select(pm.pool_id, pm.model_id, pm.joined_generation))
    ).all()
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
    placed = await adapterrows.load(session, pool_names)
    pools = tuple(
        spec.Pool(
            spec.PoolSpec(
                row.name,
                row.purpose,
                tuple(sorted(members_b.get(row.id, []))),
                tuple(sorted(members_m.get(row.id, []))),
                dict(row.labels),
                placed.members.get(row.id, ()),
            ),
            meta(row),
        )
        for row in sorted(pool_rows, key=lambda r: r.name)
    )
    return desired.DesiredState(
        backends=tuple(_backend(row) for row in sorted(backend_rows, key=lambda r: r.name)),
        models=tuple(_model(row) for row in sorted(model_rows, key=lambda r: r.name)),
        pools=pools,
        backends_joined=backends_joined,
        models_joined=models_joined,
        adapters=placed.adapters,
        adapters_joined=placed.joined,
    )


async def backend_row(session: AsyncSession, name: str) -> schema.BackendRow:
    row = await session.scalar(sa.select(schema.BackendRow).where(schema.BackendRow.name == name))
    if row is None:
        raise await absent(session, "backend", name)
    return row


async def model_row(session: AsyncSession, name: str) -> schema.ModelRow:
    key = names.key(spec.model_name(name), spec.BackendType.OLLAMA)
    row = await session.scalar(
        sa.select(schema.ModelRow).where(schema.ModelRow.canonical_name == key)
    )
    if row is None:
        raise await absent(session, "model", name)
    return row


async def pool_row(session: AsyncSession, name: str) -> schema.PoolRow:
    row = await session.scalar(sa.select(schema.PoolRow).where(schema.PoolRow.name == name))
    if row is None:
        raise await absent(session, "pool", name)
    return row


async def get_backend(session: AsyncSession, name: str) -> spec.Backend:
    """The stored backend; raises `NotFound`."""
    return _backend(await backend_row(session, name))


async def get_model(session: AsyncSession, name: str) -> spec.Model:
    """The stored model ``name`` denotes (``llama3`` finds ``llama3:latest``); raises `NotFound`."""
    return _model(await model_row(session, name))


# --- writing backends and models ---------------------------------------------------------------


async def add_backend(
    session: AsyncSession, value: spec.BackendSpec, pools: Sequence[str] = (spec.DEFAULT_POOL,)
) -> spec.Backend:
    """Create a backend at generation 1 and join it to ``pools``.

    Raises `SpecError` for an invalid spec, `AlreadyExists`, or `NotFound` for a missing pool.
    """
    value = residency.validate_backend(value)
    if await session.scalar(
        sa.select(schema.BackendRow.id).where(schema.BackendRow.name == value.name)
    ):
        raise AlreadyExists("backend", value.name)
    pool_ids = await _pool_ids(session, pools)
    row = schema.BackendRow()
    _fill_backend(row, value)
    session.add(row)
    await session.flush()
    await memberships.replace(session, schema.PoolBackendRow, pool_ids, member=row.id)
    await session.flush()
    return _backend(row)


async def add_backends(session: AsyncSession, values: Sequence[spec.BackendSpec]) -> None:
    """Create many backends in no pool with one check and one insert (used by apply).

    Raises `SpecError` or `AlreadyExists` before writing anything.
    """
    values = [residency.validate_backend(value) for value in values]
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
    value = residency.validate_backend(value)
    row = await backend_row(session, value.name)
    before = _backend(row).spec
    new_key = value.credentials is not None and value.credentials.ciphertext is not None
    _fill_backend(row, value)
    changed = before != _backend(row).spec or new_key
    if changed:
        touch(row)
    if pools is not None:
        pool_ids = await _pool_ids(session, pools)
        table = schema.PoolBackendRow
        changed = await memberships.replace(session, table, pool_ids, member=row.id) or changed
    await session.flush()
    return _backend(row), changed


async def _pool_ids(session: AsyncSession, pools: Sequence[str]) -> list[int]:
    """The ids of the pools named, in order; raises `NotFound` for the first missing one."""
    return [(await pool_row(session, name)).id for name in dict.fromkeys(pools)]


async def delete_backend(session: AsyncSession, name: str) -> None:
    """Delete a backend and its memberships. Its download jobs are collected by the next cycle."""
    row = await backend_row(session, name)
    await memberships.replace(session, schema.PoolBackendRow, (), member=row.id)
    await session.delete(row)
    await session.flush()


async def add_model(
    session: AsyncSession, value: spec.ModelSpec, pools: Sequence[str] = (spec.DEFAULT_POOL,)
) -> spec.Model:
    """Create a model at generation 1 and join it to ``pools``.

    Raises `SpecError`, `AlreadyExists` (also for the same model under another spelling, such
    as ``llama3`` beside ``llama3:latest``) or `NotFound` for a missing pool.
    """
    value = residency.validate_model(value)
    key = names.key(value.name, spec.BackendType.OLLAMA)
    existing = await session.scalar(
        sa.select(schema.ModelRow.name).where(schema.ModelRow.canonical_name == key)
    )
    if existing is not None:
        raise AlreadyExists("model", value.name, existing)
    if clash := await adapterrows.clash(session, [value.name]):
        raise StoreError(clash)
    pool_ids = await _pool_ids(session, pools)
    row = schema.ModelRow(name=value.name, canonical_name=key)
    _fill_model(row, value)
    session.add(row)
    await session.flush()
    await memberships.replace(session, schema.PoolModelRow, pool_ids, member=row.id)
    await session.flush()
    return _model(row)


async def add_models(session: AsyncSession, values: Sequence[spec.ModelSpec]) -> None:
    """Create many models in no pool with one check and one insert (used by apply)."""
    values = [residency.validate_model(value) for value in values]
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
    if clash := await adapterrows.clash(session, [value.name for value in values]):
        raise StoreError(clash)
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
    row.labels = dict(value.labels)
    row.vllm = None if value.vllm is None else engineargs.document(value.vllm)
    row.warm, row.keep_alive = value.warm, value.keep_alive
    row.update_policy = value.update.policy.value
    row.max_unavailable = value.update.max_unavailable


async def update_model(
    session: AsyncSession, value: spec.ModelSpec, pools: Sequence[str] | None = None
) -> tuple[spec.Model, bool]:
    """Replace a model's overrides, and its pools exactly when ``pools`` is given.

    The model keeps the spelling it was declared with; the generation goes up only on a real
    change. Returns the model and whether anything changed.
    """
    value = residency.validate_model(value)
    row = await model_row(session, value.name)
    before = _model(row).spec
    _fill_model(row, value)
    after = _model(row).spec
    changed = before != after
    if dataclasses.replace(before, labels={}) != dataclasses.replace(after, labels={}):
        touch(row)
    elif changed:
        # Labels are the model's metadata, as in Kubernetes: its generation is part of every
        # download's key, and relabelling must not queue again a download someone cancelled.
        row.updated_at = schema.utcnow()
    if pools is not None:
        pool_ids = await _pool_ids(session, pools)
        table = schema.PoolModelRow
        changed = await memberships.replace(session, table, pool_ids, member=row.id) or changed
    await session.flush()
    return _model(row), changed


async def delete_model(session: AsyncSession, name: str) -> None:
    """Delete a model and its memberships; refused while an adapter is based on it."""
    row = await model_row(session, name)
    if based := await adapterrows.based_on(session, row.canonical_name):
        listed = ", ".join(based)
        raise StoreError(
            f"model {echo.quoted(row.name)} is the base model of adapter {listed}; "
            "delete or update those adapters first"
        )
    await memberships.replace(session, schema.PoolModelRow, (), member=row.id)
    await session.delete(row)
    await session.flush()
