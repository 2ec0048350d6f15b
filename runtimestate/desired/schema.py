"""The runtimestate tables: backends, models, adapters, pools and their memberships, and the
status, replica, cycle-request and upgrade-check records.

Owned by `runtimestate`; `migrations/env.py` combines this ``metadata`` with the other
packages'. Only the store modules use these ORM classes; rows never leave them (callers get
the frozen values of `runtimestate.desired.spec`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from dwqueue import schema as dwqueue_schema

# One naming convention and one UTC timestamp type for every package's tables: shared from
# the lower layer (dwqueue imports nothing of ours, so it owns them).
NAMING_CONVENTION = dwqueue_schema.NAMING_CONVENTION
UtcDateTime = dwqueue_schema.UtcDateTime

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(orm.DeclarativeBase):
    metadata = metadata


class Stamped:
    """Columns every spec table has: generation and timestamps."""

    generation: orm.Mapped[int] = orm.mapped_column(sa.Integer, default=1)
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, default=utcnow)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, default=utcnow)


class BackendRow(Stamped, Base):
    __tablename__ = "backends"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(63), unique=True)
    type: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    base_url: orm.Mapped[str] = orm.mapped_column(sa.Text)
    labels: orm.Mapped[dict[str, str]] = orm.mapped_column(sa.JSON, default=dict)
    prune: orm.Mapped[str] = orm.mapped_column(sa.String(16), default="managed")
    max_pulls: orm.Mapped[int] = orm.mapped_column(sa.Integer, default=1)
    credential_kind: orm.Mapped[str | None] = orm.mapped_column(sa.String(16))
    credential_env: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    credential_ciphertext: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    vram_bytes: orm.Mapped[int | None] = orm.mapped_column(sa.BigInteger)  # warm models' budget
    disk_bytes: orm.Mapped[int | None] = orm.mapped_column(sa.BigInteger)  # pulls admitted against


class ModelRow(Stamped, Base):
    __tablename__ = "models"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(600))
    # The Ollama canonical form; unique, so `llama3` and `llama3:latest` cannot both exist.
    canonical_name: orm.Mapped[str] = orm.mapped_column(sa.String(600), unique=True)
    context_length: orm.Mapped[int | None] = orm.mapped_column(sa.Integer)
    capabilities: orm.Mapped[list[str] | None] = orm.mapped_column(sa.JSON)
    labels: orm.Mapped[dict[str, str]] = orm.mapped_column(sa.JSON, default=dict)
    # The `vllm` engine arguments in their file form (`engineargs.document`); NULL: none declared.
    vllm: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON)
    warm: orm.Mapped[bool] = orm.mapped_column(sa.Boolean, default=False, server_default=sa.false())
    keep_alive: orm.Mapped[str | None] = orm.mapped_column(sa.String(32))  # NULL: the default
    # How it takes upstream upgrades (issue 19, `updatepolicy`): manual or auto, and how many
    # copies may be upgrading at once.
    update_policy: orm.Mapped[str] = orm.mapped_column(
        sa.String(16), default="manual", server_default="manual"
    )
    max_unavailable: orm.Mapped[int] = orm.mapped_column(sa.Integer, default=1, server_default="1")


class AdapterRow(Stamped, Base):
    """A LoRA adapter: loaded where its pools place it and its base model is served."""

    __tablename__ = "adapters"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255), unique=True)
    base_model: orm.Mapped[str] = orm.mapped_column(sa.String(600))
    source: orm.Mapped[str] = orm.mapped_column(sa.Text)
    revision: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    labels: orm.Mapped[dict[str, str]] = orm.mapped_column(sa.JSON, default=dict)


class PoolRow(Stamped, Base):
    __tablename__ = "pools"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(63), unique=True)
    purpose: orm.Mapped[str] = orm.mapped_column(sa.Text, default="")
    labels: orm.Mapped[dict[str, str]] = orm.mapped_column(sa.JSON, default=dict)


class PoolBackendRow(Base):
    """A backend's membership of a pool. `joined_generation` is the pool's generation when the
    backend (last) joined it: it dates the declarations this membership makes (see
    `planview.declaration`), so re-joining re-declares and other members' comings and goings
    do not. Memberships are only ever inserted and deleted, never rewritten."""

    __tablename__ = "pool_backends"

    pool_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    backend_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("backends.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    joined_generation: orm.Mapped[int] = orm.mapped_column(sa.Integer)


class PoolModelRow(Base):
    """A model's membership of a pool; `joined_generation` as in `PoolBackendRow`."""

    __tablename__ = "pool_models"

    pool_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    joined_generation: orm.Mapped[int] = orm.mapped_column(sa.Integer)


class PoolAdapterRow(Base):
    """An adapter's membership of a pool; `joined_generation` as in `PoolBackendRow`."""

    __tablename__ = "pool_adapters"

    pool_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    adapter_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    joined_generation: orm.Mapped[int] = orm.mapped_column(sa.Integer)


class BackendStatusRow(Base):
    """The last observed state of a backend, as `runtimestate.snapshot`'s wire form.

    Written by the backend cycle only when it changed; read by the CLI and other processes.
    `last_ok_at` moves on every successful probe, so it is kept out of the document: a steady
    fleet's cycle updates that column of every row in one statement and rewrites no document.
    No foreign key: a deleted backend's row is removed by the next cycle.
    """

    __tablename__ = "backend_status"

    backend: orm.Mapped[str] = orm.mapped_column(sa.String(63), primary_key=True)
    phase: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    observed_generation: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    document: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, default=utcnow)
    last_ok_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UtcDateTime)


class ManagedModelRow(Base):
    """A model llmctl itself pulled onto a backend: what the `managed` prune policy may remove."""

    __tablename__ = "managed_models"

    backend: orm.Mapped[str] = orm.mapped_column(sa.String(63), primary_key=True)
    model_key: orm.Mapped[str] = orm.mapped_column(sa.String(600), primary_key=True)
    model: orm.Mapped[str] = orm.mapped_column(sa.String(600))
    job_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(32))
    pulled_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, default=utcnow)


class ManagedAdapterRow(Base):
    """An adapter llmctl itself loaded onto a backend: what `prune: managed` may unload."""

    __tablename__ = "managed_adapters"

    backend: orm.Mapped[str] = orm.mapped_column(sa.String(63), primary_key=True)
    adapter: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    loaded_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, default=utcnow)


class PreloadedModelRow(Base):
    """A model llmctl preloaded to keep it warm: what it unloads once the model is not warm."""

    __tablename__ = "preloaded_models"

    backend: orm.Mapped[str] = orm.mapped_column(sa.String(63), primary_key=True)
    model_key: orm.Mapped[str] = orm.mapped_column(sa.String(600), primary_key=True)
    model: orm.Mapped[str] = orm.mapped_column(sa.String(600))
    preloaded_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, default=utcnow)


class ReplicaRow(Base):
    """A process that runs backend cycles: a ``serve`` replica (its heartbeat says whether it
    is still running) or a one-off ``reconcile --once``, and its latest backend cycle.

    Written by `runtimestate.reconcile.replicas` for `runtimestate.state.State`; read by
    ``llmctl status``. ``stale_after_s`` is how long a heartbeat stays current: NULL for a
    process that is not expected to beat again (stopped, or one-off).
    """

    __tablename__ = "controller_replicas"

    owner: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    role: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    started_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)
    heartbeat_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)
    stale_after_s: orm.Mapped[float | None] = orm.mapped_column(sa.Float)
    cycle: orm.Mapped[int | None] = orm.mapped_column(sa.Integer)
    cycle_started_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UtcDateTime)
    cycle_duration_s: orm.Mapped[float | None] = orm.mapped_column(sa.Float)


class CycleRequestRow(Base):
    """A backend cycle a CLI command asked for after committing a change: the proof that a
    message on ``<prefix>.v1.control.trigger`` naming ``id`` comes from someone who can write
    to the database. Written by `runtimestate.reconcile.cyclerequests`; ``serve`` deletes the
    row when it acts on the request, and rows nobody consumed once they are old."""

    __tablename__ = "cycle_requests"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(32), primary_key=True)
    requested_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime, index=True)


class UpgradeCheckRow(Base):
    """The last check of one model's upstream revision (issue 19), shared by every replica and
    every ``reconcile --once`` so the registry is asked once per interval, not per process.
    ``source`` is ``ollama`` (a registry manifest's digest) or ``hub`` (a repo's ``main``
    commit); ``reference`` the model as asked (``qwen2:0.5b``, ``org/repo``). ``checked_at`` is
    when a process claimed the check, ``answered_at`` when it recorded the outcome; ``latest``
    the revision last seen and ``seen_at`` since when; ``error`` the last failure (kept until an
    answer). Written by `runtimestate.reconcile.upgradechecks` only."""

    __tablename__ = "upgrade_checks"

    source: orm.Mapped[str] = orm.mapped_column(sa.String(16), primary_key=True)
    reference: orm.Mapped[str] = orm.mapped_column(sa.String(512), primary_key=True)
    checked_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)
    answered_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UtcDateTime)
    latest: orm.Mapped[str | None] = orm.mapped_column(sa.String(128))
    seen_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UtcDateTime)
    error: orm.Mapped[str | None] = orm.mapped_column(sa.String(500))


class UpgradeRequestRow(Base):
    """An upgrade asked for by hand (``llmctl model upgrade NAME [--backend B]``, issue 19):
    ``model`` is the model's canonical name, ``backend`` the one backend or ``""`` for every
    backend holding an old copy. The backend cycle rolls it like an ``auto`` model's and deletes
    the row once no backend it names holds an old copy. Written by
    `runtimestate.reconcile.upgraderequests` only."""

    __tablename__ = "upgrade_requests"

    model: orm.Mapped[str] = orm.mapped_column(sa.String(600), primary_key=True)
    backend: orm.Mapped[str] = orm.mapped_column(sa.String(63), primary_key=True)
    requested_at: orm.Mapped[dt.datetime] = orm.mapped_column(UtcDateTime)
