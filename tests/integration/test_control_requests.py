"""What ``serve`` does with messages on ``<prefix>.v1.control.*`` that anyone on NATS can send:
it acts only on what the database confirms, and a flood of triggers is a handful of cycles.

The controller runs in-process (`controller.composition.Controller`) on SQLite and the shared
NATS server, with a schedule that never fires: every cycle counted is the start-up one or a
trigger's. Cycles and control messages are counted from ``/metrics``, as an operator sees them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import pathlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import httpx
import nats
import pytest
from prometheus_client import parser
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from controller import cli, composition, settings, trigger
from dwqueue import flushing, jobs, leases, queue
from runtimestate import database
from runtimestate.reconcile import cyclerequests
from tests.e2e import serve_harness as h
from tests.e2e.test_cli_downloads import job_rows

T = TypeVar("T")
NEVER = "0 0 1 1 *"  # a cron expression that does not come round during a test


@pytest.fixture
async def controller(
    sqlite_url: str, nats_url: str, nats_prefix: str, tmp_path: pathlib.Path
) -> AsyncIterator[composition.Controller]:
    config = settings.Settings(
        database_url=sqlite_url, nats_url=nats_url, subject_prefix=nats_prefix,
        data_dir=tmp_path, http_address="127.0.0.1:0", cycle_cron=NEVER, log_level="error",
    )  # fmt: skip
    async with composition.Controller(config) as running:
        await h.eventually(lambda: _more(running, 0), 10, "the start-up cycle")
        yield running


def _samples(running: composition.Controller) -> dict[str, float]:
    body = httpx.get(f"http://127.0.0.1:{running.http_port}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def _cycles(running: composition.Controller) -> float:
    samples = await asyncio.to_thread(_samples, running)
    return samples.get('llmctl_cycles_total{kind="backend",outcome="ok"}', 0.0)


async def _control(running: composition.Controller, subject: str, outcome: str) -> float:
    samples = await asyncio.to_thread(_samples, running)
    key = f'llmctl_control_requests_total{{outcome="{outcome}",subject="{subject}"}}'
    return samples.get(key, 0.0)


async def _in_session(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


async def _record(session: AsyncSession, n: int) -> list[str]:
    now = dt.datetime.now(dt.UTC)
    return [await cyclerequests.record(session, now) for _ in range(n)]


async def _pending(session: AsyncSession) -> int:
    return await cyclerequests.pending(session)


async def test_forged_triggers_run_no_cycle_and_a_confirmed_flood_runs_a_handful(
    controller: composition.Controller, sqlite_url: str, nats_url: str, nats_prefix: str
) -> None:
    subject = trigger.subject(nats_prefix, trigger.TRIGGER)
    client = await nats.connect(nats_url)
    try:
        before = await _cycles(controller)
        forged = [trigger.payload(secrets.token_hex(16)) for _ in range(1000)]
        malformed = [b"{}", b"not json", b'{"request_id": 7}', b'{"request_id": "../x"}']
        for body in forged + malformed:
            await client.publish(subject, body)
        await flushing.flush(client, 10)
        await h.eventually(
            lambda: _settled(controller, unconfirmed=1000, malformed=4), 10, "forged triggers"
        )
        assert await _cycles(controller) == before, "a forged trigger ran a cycle"

        recorded = await _in_session(sqlite_url, lambda s: _record(s, 1000))
        for start in range(0, 1000, 100):  # a flood spread over about a second
            for request_id in recorded[start : start + 100]:
                await client.publish(subject, trigger.payload(request_id))
            await flushing.flush(client, 10)
            await asyncio.sleep(0.1)
        await h.eventually(
            lambda: _settled(controller, confirmed=1000, unconfirmed=1000), 10, "the flood"
        )
        assert await _in_session(sqlite_url, _pending) == 0, "every request consumed once"
        replayed = [trigger.payload(request_id) for request_id in recorded[:100]]
        for body in replayed:  # consumed: naming them again is naming nothing
            await client.publish(subject, body)
        await flushing.flush(client, 10)
        await h.eventually(
            lambda: _settled(controller, confirmed=1000, unconfirmed=1100), 10, "replays"
        )
    finally:
        await client.close()

    # A real change through the CLI still starts its cycle within about a second; being
    # serial, that cycle also comes after every cycle the flood asked for.
    flood_over = await _cycles(controller)
    changed = await asyncio.to_thread(_cli, sqlite_url, nats_url, nats_prefix, "model", "add", "x")
    returned = time.monotonic()
    await h.eventually(lambda: _more(controller, flood_over), 5, "the change's cycle")
    assert time.monotonic() - returned < 1.6
    assert changed == 0
    flood_cycles = await _cycles(controller) - before - 1
    assert 1 <= flood_cycles <= 4, f"1,000 confirmed triggers ran {flood_cycles} cycles"


async def _settled(
    running: composition.Controller, confirmed: int = 0, unconfirmed: int = 0, malformed: int = 0
) -> bool:
    return (
        await _control(running, "trigger", "confirmed") == confirmed
        and await _control(running, "trigger", "unconfirmed") == unconfirmed
        and await _control(running, "trigger", "malformed") >= malformed
    )


async def _more(running: composition.Controller, than: float) -> bool:
    return await _cycles(running) > than


def _cli(database_url: str, nats_url: str, prefix: str, *args: str) -> int:
    targets = ["--database-url", database_url, "--nats-url", nats_url, "--subject-prefix", prefix]
    return CliRunner().invoke(cli.app, [*targets, *args]).exit_code


async def _finished_job(session: AsyncSession) -> jobs.Job:
    queued = (await queue.enqueue(session, "gpu-1", "llama3:latest")).job
    await leases.claim(session, "elsewhere")
    done = await leases.succeed(session, queued.id, "elsewhere")
    assert done is not None
    return done.job


async def test_a_forged_cancel_of_an_unknown_or_finished_job_changes_nothing(
    sqlite_url: str, nats_url: str, nats_prefix: str, tmp_path: pathlib.Path
) -> None:
    from controller import runner

    runner.ensure_schema(sqlite_url)
    finished = await _in_session(sqlite_url, _finished_job)
    unknown = jobs.new_job_id(dt.datetime.now(dt.UTC))
    before = job_rows(sqlite_url)
    subject = trigger.subject(nats_prefix, trigger.CANCEL)
    config = settings.Settings(
        database_url=sqlite_url, nats_url=nats_url, subject_prefix=nats_prefix,
        data_dir=tmp_path, http_address="127.0.0.1:0", cycle_cron=NEVER, log_level="error",
    )  # fmt: skip
    client = await nats.connect(nats_url)
    try:
        async with composition.Controller(config) as running:
            await h.eventually(lambda: _more(running, 0), 10, "the start-up cycle")
            for job_id in (unknown, finished.id):
                await client.publish(subject, json.dumps({"job_id": job_id}).encode())
            await client.publish(subject, b"[]")
            await flushing.flush(client, 10)

            async def ignored() -> bool:
                return (
                    await _control(running, "cancel", "unconfirmed") == 2
                    and await _control(running, "cancel", "malformed") == 1
                )

            await h.eventually(ignored, 10, "the cancel requests to be checked")
            assert await _control(running, "cancel", "confirmed") == 0
    finally:
        await client.close()
    after = job_rows(sqlite_url)
    assert after == before  # no job created, cancelled or touched
    assert [(row[0], row[5]) for row in after] == [(finished.id, "succeeded")]


async def _stale_and_fresh(session: AsyncSession) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    stale = await cyclerequests.record(session, now - cyclerequests.STALE_AFTER * 2)
    return stale, await cyclerequests.record(session, now)


async def test_serve_removes_cycle_requests_nobody_consumed_once_they_are_stale(
    controller: composition.Controller, sqlite_url: str, nats_url: str, nats_prefix: str
) -> None:
    stale, fresh = await _in_session(sqlite_url, _stale_and_fresh)
    client = await nats.connect(nats_url)
    try:  # any trigger makes serve look at the table
        await client.publish(
            trigger.subject(nats_prefix, trigger.TRIGGER), trigger.payload("0" * 32)
        )
        await flushing.flush(client, 10)
    finally:
        await client.close()
    await h.eventually(lambda: _settled(controller, unconfirmed=1), 10, "the trigger")
    left = await _in_session(sqlite_url, lambda s: cyclerequests.consume(s, [stale, fresh]))
    assert left == 1  # the fresh one, waiting for its own trigger
