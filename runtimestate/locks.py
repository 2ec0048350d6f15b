"""Locks that keep replicas of ``llmctl serve`` from acting on one thing at once.

- `backend_lock`: a Postgres session-level advisory lock keyed by a hash of a backend name, tried
  without waiting. `runtimestate.reconcile.execution` holds it around destructive actions on a
  backend (prune), so two replicas never delete from one backend at once; the one that does not
  get it skips the action (the next cycle re-plans from a fresh observation). On SQLite there is
  one replica by construction, so the lock is always acquired.
- `InstanceLock`: an exclusive, non-blocking ``flock`` on a file, which ``serve`` takes next to
  a SQLite database so that a second process on it is told to stop.
- `migration_lock`: a blocking advisory lock that serialises migrations of replicas starting
  together.

Locks are released when the block ends, and by the server when the connection (or process) dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
from collections.abc import AsyncIterator, Iterator
from typing import IO

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# Keys live in one 64-bit space shared with anything else using advisory locks on the database;
# the namespace makes a collision with another application's keys unlikely.
_NAMESPACE = b"llmctl.backend."


def backend_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (Postgres advisory locks take a bigint)."""
    digest = hashlib.blake2b(_NAMESPACE + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.asynccontextmanager
async def backend_lock(
    bind: AsyncEngine | async_sessionmaker[AsyncSession], name: str
) -> AsyncIterator[bool]:
    """``async with backend_lock(engine_or_sessions, "gpu-1") as acquired:``; never waits.

    Yields True when this process holds the backend's lock for the block, False when another
    session holds it. Uses a connection of its own outside the caller's transaction, so the
    lock covers HTTP calls made in the block. Raises what the database raises when unreachable.
    """
    engine = bind if isinstance(bind, AsyncEngine) else _engine_of(bind)
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = backend_key(name)
    async with engine.connect() as connection:
        acquired = bool(
            await connection.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        )
        await connection.commit()
        try:
            yield acquired
        finally:
            if acquired:
                with contextlib.suppress(sa.exc.DBAPIError):  # a dead connection frees it too
                    await connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    await connection.commit()


def _engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the session factory is not bound to an AsyncEngine")
    return bind


class InstanceLock:
    """An exclusive ``flock`` on ``path`` held for the life of the process (or until release).

    `acquire` returns False when another process holds it; `holder` then tells its pid.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def holder(self) -> str:
        """The pid written by whoever holds the lock, or '?'."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


@contextlib.contextmanager
def migration_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold a blocking Postgres advisory lock for the block, so replicas that start together
    migrate one after the other (the later ones find the schema current). A no-op on SQLite."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = backend_key("__migrations__")
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            connection.commit()
