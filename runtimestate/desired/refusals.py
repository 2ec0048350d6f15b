"""The store's refusals: its errors, and the `NotFound` of a name with the stored names close to it.

Raised by every store module (`store`, `poolstore`, `adapterstore`, `adapterrows`) and caught by
the CLI and the manifest, which show the message as it is: it names the object and the fix.
Reading the stored names for a suggestion is its only I/O; it writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import echo
from runtimestate.desired import names, schema, spec, suggestions


class StoreError(ValueError):
    """A request the stored state refuses; the message names the object and the fix."""


class NotFound(StoreError):
    """No stored ``kind`` is named ``name``; ``close`` are the stored names one edit away."""

    def __init__(self, kind: str, name: str, close: Sequence[str] = ()) -> None:
        hint = suggestions.phrase(close) if close else f"see llmctl {kind} list"
        super().__init__(f"{kind} {echo.quoted(name)} does not exist; {hint}")
        self.kind, self.name, self.close = kind, name, tuple(close)


def missing(kind: str, name: str, stored: Iterable[str]) -> NotFound:
    """The `NotFound` of ``name`` among the ``stored`` names of ``kind``, suggesting the ones
    one edit away (models compared by their canonical names, as the store finds them)."""
    if kind != "model":
        return NotFound(kind, name, suggestions.close(name, stored))
    try:
        names.key(name, spec.BackendType.OLLAMA)
    except names.InvalidName:
        return NotFound(kind, name)
    return NotFound(kind, name, suggestions.close(name, stored, _model_key))


def _model_key(name: str) -> str:
    return names.key(name, spec.BackendType.OLLAMA)


async def absent(session: AsyncSession, kind: str, name: str) -> NotFound:
    """`missing` against the names stored now; the caller raises it."""
    column = {
        "backend": schema.BackendRow.name,
        "model": schema.ModelRow.name,
        "pool": schema.PoolRow.name,
        "adapter": schema.AdapterRow.name,
    }[kind]
    return missing(kind, name, await session.scalars(sa.select(column)))


class AlreadyExists(StoreError):
    def __init__(self, kind: str, name: str, existing: str | None = None) -> None:
        same = f" (as {echo.quoted(existing)})" if existing and existing != name else ""
        super().__init__(
            f"{kind} {echo.quoted(name)} already exists{same}; "
            f"use llmctl {kind} update or pick another name"
        )
        self.kind, self.name = kind, name
