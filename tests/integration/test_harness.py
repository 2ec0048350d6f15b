"""The test harness provisions real Postgres and NATS servers, isolates tests on them, and can
stage outages (stop and start on the same port).

These tests build SQLAlchemy engines with explicit drivers themselves; product code receives the
plain URLs and chooses its driver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import psycopg
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests import childprocess, services

DRIVERS = {"postgresql://": "postgresql+psycopg://", "sqlite:///": "sqlite+aiosqlite:///"}


def with_async_driver(url: str) -> str:
    for plain, driver in DRIVERS.items():
        if url.startswith(plain):
            return driver + url.removeprefix(plain)
    raise AssertionError(f"not a plain URL: {url}")


async def scalar(url: str, query: str) -> object:
    engine = create_async_engine(with_async_driver(url))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(query))).scalar_one()
    finally:
        await engine.dispose()


async def test_postgres_url_is_a_plain_url_of_a_real_postgresql_server(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    version = await scalar(postgres_url, "SELECT version()")
    assert str(version).startswith("PostgreSQL ")


async def test_postgres_url_names_an_empty_database_of_its_own(postgres_url: str) -> None:
    name = await scalar(postgres_url, "SELECT current_database()")
    tables = await scalar(
        postgres_url,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert name == postgres_url.rsplit("/", 1)[1]
    assert str(name).startswith("llmctl_test_")
    assert tables == 0


def test_scratch_databases_are_isolated_and_dropped_afterwards(
    postgres_server: services.Postgres,
) -> None:
    with (
        services.scratch_database(postgres_server) as first,
        services.scratch_database(postgres_server) as second,
    ):
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE marker (id int)")
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)
        assert first != second
        # A lingering connection must not keep the database alive.
        lingering = psycopg.connect(first)
    names = {url.rsplit("/", 1)[1] for url in (first, second)}
    with psycopg.connect(postgres_server.admin_url()) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    lingering.close()
    assert names.isdisjoint(row[0] for row in rows)


async def test_sqlite_url_is_a_writable_file_in_the_test_directory(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = create_async_engine(with_async_driver(sqlite_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v text)"))
            await conn.execute(text("INSERT INTO t VALUES ('kept')"))
        async with engine.connect() as conn:
            value = (await conn.execute(text("SELECT v FROM t"))).scalar_one()
    finally:
        await engine.dispose()
    assert value == "kept"
    assert (tmp_path / "llmctl.db").stat().st_size > 0


async def test_database_url_runs_each_store_test_against_sqlite_and_postgres(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["database_url"]
    expected_scheme = {"sqlite": "sqlite:///", "postgres": "postgresql://"}[backend]
    assert database_url.startswith(expected_scheme)
    assert (request.node.get_closest_marker("postgres") is not None) == (backend == "postgres")
    assert await scalar(database_url, "SELECT 1") == 1


async def test_nats_message_published_reaches_a_subscriber(
    nats_url: str, nats_prefix: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("nats") is not None
    client = await nats.connect(nats_url)
    try:
        subscription = await client.subscribe(f"{nats_prefix}.greeting")
        await client.publish(f"{nats_prefix}.greeting", b"hello")
        message = await subscription.next_msg(timeout=5)
    finally:
        await client.close()
    assert message.data == b"hello"


async def test_jetstream_returns_the_last_message_of_a_subject(
    nats_url: str, nats_prefix: str
) -> None:
    client = await nats.connect(nats_url)
    stream = f"{nats_prefix}_jobs"
    try:
        jetstream = client.jetstream()
        await jetstream.add_stream(name=stream, subjects=[f"{nats_prefix}.jobs.>"])
        await jetstream.publish(f"{nats_prefix}.jobs.a", b"first")
        await jetstream.publish(f"{nats_prefix}.jobs.a", b"second")
        await jetstream.publish(f"{nats_prefix}.jobs.b", b"other")
        last = await jetstream.get_last_msg(stream, f"{nats_prefix}.jobs.a")
        await jetstream.delete_stream(stream)
    finally:
        await client.close()
    assert last.data == b"second"


async def connect_reconnecting(url: str, reconnected: asyncio.Event) -> NatsClient:
    async def on_reconnect() -> None:
        reconnected.set()

    return await nats.connect(
        url,
        reconnected_cb=on_reconnect,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.05,
    )


async def test_nats_client_reconnects_when_the_server_comes_back_on_the_same_port(
    fresh_nats_server: services.NatsServer, nats_prefix: str
) -> None:
    url_before = fresh_nats_server.url
    reconnected = asyncio.Event()
    client = await connect_reconnecting(url_before, reconnected)
    try:
        subscription = await client.subscribe(f"{nats_prefix}.after")
        await asyncio.to_thread(fresh_nats_server.stop)
        refused = not childprocess.port_accepts(fresh_nats_server.port)
        await asyncio.to_thread(fresh_nats_server.start)
        await asyncio.wait_for(reconnected.wait(), timeout=20)
        await client.publish(f"{nats_prefix}.after", b"back")
        message = await subscription.next_msg(timeout=5)
    finally:
        await client.close()
    assert refused
    assert fresh_nats_server.url == url_before
    assert message.data == b"back"


async def test_jetstream_streams_survive_a_nats_restart(
    fresh_nats_server: services.NatsServer, nats_prefix: str
) -> None:
    client = await nats.connect(fresh_nats_server.url)
    try:
        await client.jetstream().add_stream(name="kept", subjects=[f"{nats_prefix}.kept"])
        await client.jetstream().publish(f"{nats_prefix}.kept", b"durable")
    finally:
        await client.close()
    await asyncio.to_thread(fresh_nats_server.kill)
    await asyncio.to_thread(fresh_nats_server.start)
    client = await nats.connect(fresh_nats_server.url)
    try:
        last = await client.jetstream().get_last_msg("kept", f"{nats_prefix}.kept")
    finally:
        await client.close()
    assert last.data == b"durable"


def test_postgres_server_comes_back_on_the_same_port_with_its_data(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('row')")
    fresh_postgres_server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    fresh_postgres_server.start()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT v FROM kept").fetchone()
    assert fresh_postgres_server.url == url
    assert row == ("row",)


def test_missing_postgres_binaries_raise_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(services.PG_BIN_ENV, str(tmp_path))
    with pytest.raises(services.ServiceUnavailable, match=services.PG_BIN_ENV):
        services.find_postgres_bin()
