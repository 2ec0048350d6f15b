"""The one mapping of database errors (`runtimestate.database`): an unreachable database comes
out as `errors.DatabaseUnavailable` named by the driver's first line, never SQL; any other
database error passes unchanged. Real SQLite and Postgres, and a real refused connection."""

from __future__ import annotations

import asyncio
import pathlib
import threading

import grimp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import database, errors

UNREACHABLE_POSTGRES = "postgresql://llmctl:hunter2@127.0.0.1:1/llmctl"


async def _select_one(session: AsyncSession) -> int:
    return int((await session.execute(sa.text("SELECT 1"))).scalar_one())


async def _unavailable(url: str) -> errors.DatabaseUnavailable:
    before = set(threading.enumerate())
    engine = database.create_async_engine(url)
    try:
        with pytest.raises(errors.DatabaseUnavailable) as caught:
            await database.transaction(database.session_factory(engine), _select_one)
        with pytest.raises(errors.DatabaseUnavailable) as read:
            await database.read_snapshot(database.session_factory(engine), _select_one)
    finally:
        await engine.dispose()
        await _aiosqlite_threads_ended(set(threading.enumerate()) - before)
    assert read.value.detail == caught.value.detail
    return caught.value


async def _aiosqlite_threads_ended(started: set[threading.Thread]) -> None:
    # aiosqlite stops the worker thread of a connection that failed to open without awaiting
    # it; the thread then hands its result to this test's event loop. Ending the test first
    # closes the loop under it (an unhandled thread exception in a later test).
    for thread in started:
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 10)


async def test_a_refused_postgres_connection_is_database_unavailable_in_one_line() -> None:
    exc = await _unavailable(UNREACHABLE_POSTGRES)
    assert isinstance(exc, errors.TemporaryError)
    assert exc.reason == "database_unavailable"
    assert isinstance(exc.__cause__, sa.exc.OperationalError)
    assert "\n" not in exc.detail
    assert "SELECT" not in exc.detail
    assert "hunter2" not in str(exc)
    assert str(exc.__cause__.orig).strip().splitlines()[0].strip() == exc.detail


async def test_a_sqlite_file_that_cannot_be_opened_is_database_unavailable(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "a-directory.db").mkdir()
    exc = await _unavailable(f"sqlite:///{tmp_path / 'a-directory.db'}")
    assert exc.detail == "unable to open database file"
    assert isinstance(exc.__cause__, sa.exc.OperationalError)


async def test_a_database_error_that_is_no_outage_passes_unchanged(database_url: str) -> None:
    engine = database.create_async_engine(database_url)

    async def duplicate(session: AsyncSession) -> None:
        await session.execute(sa.text("CREATE TEMPORARY TABLE pairs (id INTEGER PRIMARY KEY)"))
        await session.execute(sa.text("INSERT INTO pairs (id) VALUES (1)"))
        await session.execute(sa.text("INSERT INTO pairs (id) VALUES (1)"))

    try:
        with pytest.raises(sa.exc.IntegrityError) as caught:
            await database.transaction(database.session_factory(engine), duplicate)
    finally:
        await engine.dispose()
    described = database.describe(caught.value)
    assert "\n" not in described
    assert "INSERT" not in described
    assert described


def test_the_backend_cycle_never_imports_the_download_worker() -> None:
    graph = grimp.build_graph("runtimestate")
    chain = graph.find_shortest_chain(
        importer="runtimestate.reconcile.cycle", imported="runtimestate.downloads.worker"
    )
    assert chain is None, f"runtimestate.reconcile imports the download worker: {chain}"
