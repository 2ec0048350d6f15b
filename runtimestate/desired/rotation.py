"""Key rotation: re-encrypting every stored API key under the current ``LLMCTL_SECRET_KEY``.

Called by ``llmctl secrets rotate``. Works in the caller's transaction and never commits: it
reads (and on Postgres locks) every backend row holding an encrypted key, opens each with the
current or the previous secret key (`credentials.rotate`), and writes the new ciphertexts
unless it is a dry run. All or nothing: when any key cannot be opened it raises before writing
anything. It returns counts and backend names, never a key; it does not change a backend's
generation (the key itself did not change).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import credentials
from runtimestate.desired import schema


class RotationError(credentials.CredentialError):
    """Some stored keys open with neither secret key; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Rotation:
    """What a rotation did (or, in a dry run, would do)."""

    keys: int  # stored encrypted keys, all re-encrypted under the current secret key
    moved: int  # of which were under the previous secret key or in the first format
    dry_run: bool


async def rotate(
    session: AsyncSession, environ: Mapping[str, str], *, dry_run: bool = False
) -> Rotation:
    """Re-encrypt every stored key under the current secret key (fresh salts).

    Raises `credentials.CredentialError` when the current key is unset or weak, and
    `RotationError` naming the backends whose keys neither key opens; writes nothing then.
    """
    credentials.require_secret_key(environ)
    query = (
        sa.select(schema.BackendRow)
        .where(schema.BackendRow.credential_kind == credentials.CredentialKind.ENCRYPTED.value)
        .where(schema.BackendRow.credential_ciphertext.is_not(None))
        .order_by(schema.BackendRow.name)
        .with_for_update()
    )
    rows = (await session.scalars(query)).all()
    rotated: list[tuple[schema.BackendRow, str]] = []
    failed: list[str] = []
    moved = 0
    for row in rows:
        assert row.credential_ciphertext is not None
        try:
            new, was_moved = credentials.rotate(row.credential_ciphertext, environ)
        except credentials.CredentialError:
            failed.append(row.name)
            continue
        assert new.ciphertext is not None
        rotated.append((row, new.ciphertext))
        moved += was_moved
    if failed:
        raise RotationError(
            f"the stored keys of {', '.join(failed)} open with neither "
            f"{credentials.SECRET_KEY_VARIABLE} nor {credentials.PREVIOUS_KEY_VARIABLE}; set "
            f"the key they were stored with as {credentials.PREVIOUS_KEY_VARIABLE}, or store "
            "them again (llmctl backend update NAME --api-key-stdin); nothing was changed"
        )
    if not dry_run:
        for row, ciphertext in rotated:
            row.credential_ciphertext = ciphertext
    return Rotation(keys=len(rows), moved=moved, dry_run=dry_run)
