"""``llmctl downloads list|get|cancel|retry`` on SQLite and Postgres, and what they tell NATS."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from controller import runner
from dwqueue import backoff, events, flushing, jobs, leases, queue, schema
from runtimestate import database
from runtimestate.desired import names
from tests.e2e.conftest import Cli

T = TypeVar("T")
OWNER = "worker-1"
PROGRESS = jobs.Progress("pulling 6a0746a1ec1a", "sha256:6a07", 300_000_000, 10**9, 12.3e6, 57.0)
DOC_KEYS = {
    "id", "backend", "model", "state", "attempts", "maxAttempts", "status", "digest",
    "completed", "total", "percent", "rateBps", "etaS", "error", "errorClass", "nextAttemptAt",
    "createdAt", "updatedAt", "startedAt", "finishedAt", "leaseOwner", "leaseExpiresAt",
}  # fmt: skip
WIDE_HEADERS = [
    "ID", "BACKEND", "MODEL", "STATE", "PROGRESS", "SIZE", "RATE", "ETA", "ATTEMPTS", "AGE",
    "STATUS", "DIGEST", "LEASE-OWNER", "NEXT-ATTEMPT", "ERROR-CLASS", "ERROR",
]  # fmt: skip
WIDE_ONLY = {"STATUS", "DIGEST", "LEASE-OWNER", "NEXT-ATTEMPT", "ERROR-CLASS"}


# --- seeding the queue directly, as the controller's cycles do ---------------------------------


def in_session(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    runner.ensure_schema(url)

    async def run() -> T:
        engine = database.create_async_engine(url)
        try:
            async with database.session_factory(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def enqueue(url: str, backend: str, model: str) -> jobs.Job:
    async def work(session: AsyncSession) -> jobs.Job:
        key = names.key(model, "ollama")
        return (await queue.enqueue(session, backend, model, model_key=key)).job

    return in_session(url, work)


def start_pulling(url: str) -> jobs.Job:
    """Claim the oldest due job and record some progress on it."""

    async def work(session: AsyncSession) -> jobs.Job:
        (claimed,) = await leases.claim(session, OWNER)
        change = await leases.record_progress(session, claimed.job.id, OWNER, PROGRESS)
        assert change is not None
        return change.job

    return in_session(url, work)


def fail_for_good(
    url: str, job_id: str, error: str = "pull model manifest: file does not exist"
) -> None:
    async def work(session: AsyncSession) -> None:
        change = await leases.fail(
            session, job_id, OWNER, error=error, error_class=jobs.ErrorClass.PERMANENT
        )
        assert change is not None

    in_session(url, work)


def fail_for_now(url: str, job_id: str, retry_in_s: float) -> None:
    """A transient failure: the job is queued again, due ``retry_in_s`` from now."""
    policy = backoff.Policy(base_s=retry_in_s, cap_s=retry_in_s, jitter=backoff.Jitter.NONE)

    async def work(session: AsyncSession) -> None:
        change = await leases.fail(
            session,
            job_id,
            OWNER,
            error="unavailable: connection reset",
            error_class=jobs.ErrorClass.TRANSIENT,
            policy=policy,
        )
        assert change is not None

    in_session(url, work)


def succeed(url: str, job_id: str) -> None:
    async def work(session: AsyncSession) -> None:
        assert await leases.succeed(session, job_id, OWNER) is not None

    in_session(url, work)


def job_rows(url: str) -> list[tuple[str, ...]]:
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(sa.select(schema.download_jobs)).all()
            return sorted(tuple(str(value) for value in row) for row in found)
    finally:
        engine.dispose()


def cycle_request_ids(url: str) -> set[str]:
    """The ids of the cycle requests recorded in the database and not yet consumed."""
    from runtimestate.desired import schema as desired

    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(sa.select(desired.CycleRequestRow.id)))
    finally:
        engine.dispose()


def table_cells(out: str) -> list[dict[str, str]]:
    """The rows of a printed table as header -> cell text (cells start under their header)."""
    header, _, *rows = out.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return [
        {
            name: row[start:end].strip()
            for name, start, end in zip(header.split(), starts, ends, strict=True)
        }
        for row in rows
        if row.strip()
    ]


def key_values(out: str) -> dict[str, str]:
    """``key: value`` lines (``downloads get``) as a mapping."""
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


# --- list and get ------------------------------------------------------------------------------


def test_list_shows_every_download_with_its_progress_and_filters_by_backend_and_state(
    llmctl: Cli, database_url: str
) -> None:
    first = enqueue(database_url, "gpu-1", "llama3")
    second = enqueue(database_url, "gpu-2", "qwen2:0.5b")
    start_pulling(database_url)

    listed = llmctl("downloads", "list", "-o", "json")
    assert listed.code == 0, listed.err
    docs = listed.json()
    assert [d["id"] for d in docs] == [first.id, second.id]
    assert set(docs[0]) == DOC_KEYS
    assert (docs[0]["state"], docs[0]["percent"], docs[0]["rateBps"]) == ("running", 30.0, 12.3e6)
    assert (docs[0]["attempts"], docs[0]["maxAttempts"]) == (1, 5)
    assert (docs[0]["leaseOwner"], docs[1]["leaseOwner"]) == (OWNER, None)
    assert docs[0]["leaseExpiresAt"].endswith("Z")
    assert docs[0]["startedAt"].endswith("Z")
    assert (docs[1]["state"], docs[1]["startedAt"]) == ("queued", None)

    by_backend = llmctl("downloads", "list", "--backend", "gpu-2", "-o", "json").json()
    assert [d["id"] for d in by_backend] == [second.id]
    running = llmctl("downloads", "list", "--state", "running", "-o", "json").json()
    assert [d["id"] for d in running] == [first.id]
    active = llmctl("downloads", "list", "--state", "active", "-o", "json").json()
    assert [d["id"] for d in active] == [first.id, second.id]
    newest = llmctl("downloads", "list", "--limit", "1", "-o", "json").json()
    assert [d["id"] for d in newest] == [second.id]


def test_list_as_a_table_shows_percent_rate_eta_and_attempts_in_kubectl_columns(
    llmctl: Cli, database_url: str
) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    start_pulling(database_url)
    table = llmctl("downloads", "list")
    assert table.code == 0, table.err
    header, _, row = table.out.splitlines()[:3]
    assert header.split() == [
        "ID", "BACKEND", "MODEL", "STATE", "PROGRESS", "SIZE", "RATE", "ETA", "ATTEMPTS", "AGE",
        "ERROR",
    ]  # fmt: skip
    assert row.split()[:11] == [job.id, "gpu-1", "llama3", "running", "30.0%", "300", "MB/1.0",
                                "GB", "12.3", "MB/s", "57s"]  # fmt: skip
    assert row.split()[11] == "1/5"


def test_list_wide_adds_status_digest_lease_owner_next_attempt_and_error_class(
    llmctl: Cli, database_url: str
) -> None:
    running = enqueue(database_url, "gpu-1", "llama3")
    start_pulling(database_url)
    retrying = enqueue(database_url, "gpu-2", "qwen2:0.5b")
    start_pulling(database_url)
    fail_for_now(database_url, retrying.id, retry_in_s=600)

    wide = llmctl("downloads", "list", "-o", "wide")
    assert wide.code == 0, wide.err
    assert wide.out.splitlines()[0].split() == WIDE_HEADERS
    cells = {row["ID"]: row for row in table_cells(wide.out)}
    pulling = cells[running.id]
    assert (pulling["STATE"], pulling["PROGRESS"], pulling["ATTEMPTS"]) == (
        "running",
        "30.0%",
        "1/5",
    )
    assert (pulling["STATUS"], pulling["DIGEST"]) == ("pulling 6a0746a1ec1a", "6a07")
    assert (pulling["LEASE-OWNER"], pulling["NEXT-ATTEMPT"], pulling["ERROR-CLASS"]) == (
        OWNER, "-", "-",
    )  # fmt: skip
    queued = cells[retrying.id]
    assert (queued["STATE"], queued["LEASE-OWNER"], queued["ERROR-CLASS"]) == (
        "queued", "-", "transient",
    )  # fmt: skip
    assert queued["NEXT-ATTEMPT"] in ("in 9m", "in 10m")  # due 600 s after it failed
    assert queued["ERROR"] == "unavailable: connection reset"
    plain = llmctl("downloads", "list")  # the plain table keeps its columns
    assert plain.out.splitlines()[0].split() == [h for h in WIDE_HEADERS if h not in WIDE_ONLY]


def test_text_from_backends_and_users_is_printed_as_it_is_never_as_rich_markup(
    llmctl: Cli, database_url: str
) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    start_pulling(database_url)
    error = "pull model manifest: 400: [/bold] not [red]allowed[/red]"
    fail_for_good(database_url, job.id, error=error)
    for fmt in ("table", "wide"):
        listed = llmctl("downloads", "list", "-o", fmt)
        assert listed.code == 0, listed.err
        assert error in listed.out
    got = llmctl("downloads", "get", job.id)
    assert key_values(got.out)["error"] == error


def test_get_shows_one_download_with_its_error(llmctl: Cli, database_url: str) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    start_pulling(database_url)
    fail_for_good(database_url, job.id)

    got = llmctl("downloads", "get", job.id.lower(), "-o", "json")
    assert got.code == 0, got.err
    doc = got.json()
    assert (doc["id"], doc["state"], doc["errorClass"]) == (job.id, "failed", "permanent")
    assert doc["error"] == "pull model manifest: file does not exist"
    assert doc["finishedAt"] is not None
    shown = key_values(llmctl("downloads", "get", job.id).out)
    assert (shown["id"], shown["state"], shown["leaseOwner"]) == (job.id, "failed", "-")


# --- cancel and retry --------------------------------------------------------------------------


def test_cancel_by_id_is_durable_and_a_second_cancel_changes_nothing(
    llmctl: Cli, database_url: str
) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    cancelled = llmctl("downloads", "cancel", job.id)
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.strip() == f"download/{job.id} cancelled"
    doc = llmctl("downloads", "get", job.id, "-o", "json").json()
    assert (doc["state"], doc["errorClass"]) == ("cancelled", "cancelled")

    before = job_rows(database_url)
    again = llmctl("downloads", "cancel", job.id)
    assert (again.code, again.out.strip()) == (0, f"download/{job.id} already cancelled")
    assert job_rows(database_url) == before


def test_cancel_by_backend_and_model_compares_ollama_names_canonically(
    llmctl: Cli, database_url: str
) -> None:
    on_gpu_1 = enqueue(database_url, "gpu-1", "llama3")
    on_gpu_2 = enqueue(database_url, "gpu-2", "llama3")
    result = llmctl("downloads", "cancel", "--backend", "gpu-1", "--model", "Llama3:latest")
    assert result.code == 0, result.err
    assert result.out.strip() == f"download/{on_gpu_1.id} cancelled"
    states = {d["id"]: d["state"] for d in llmctl("downloads", "list", "-o", "json").json()}
    assert states == {on_gpu_1.id: "cancelled", on_gpu_2.id: "queued"}


def test_retry_requeues_a_failed_download_under_the_same_id_with_attempts_reset(
    llmctl: Cli, database_url: str
) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    start_pulling(database_url)
    fail_for_good(database_url, job.id)

    retried = llmctl("downloads", "retry", job.id)
    assert retried.code == 0, retried.err
    assert retried.out.strip() == f"download/{job.id} queued"
    doc = llmctl("downloads", "get", job.id, "-o", "json").json()
    assert (doc["state"], doc["attempts"], doc["error"]) == ("queued", 0, None)
    again = llmctl("downloads", "retry", job.id)
    assert (again.code, again.out.strip()) == (0, f"download/{job.id} already queued")


VALID_UNKNOWN_ID = "01J00000000000000000000000"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get", VALID_UNKNOWN_ID), f"download {VALID_UNKNOWN_ID} not found"),
        (("cancel", VALID_UNKNOWN_ID), f"download {VALID_UNKNOWN_ID} not found"),
        (("retry", VALID_UNKNOWN_ID), f"download {VALID_UNKNOWN_ID} not found"),
        (("get", "42"), "'42' is not a download id"),
        (("cancel", "not-an-id"), "'not-an-id' is not a download id"),
        (("retry", "u" * 26), "is not a download id"),  # U is not Crockford base 32
        (("cancel",), "give a download id, or --backend and --model together"),
        (("cancel", "--backend", "gpu-1"), "give a download id, or --backend and --model"),
        (("cancel", "{job}", "--backend", "gpu-1"), "give a download id or --backend with"),
        (
            ("cancel", "--backend", "gpu-2", "--model", "llama3"),
            "no queued or running download of llama3 on backend gpu-2",
        ),
        (("cancel", "--backend", "gpu-1", "--model", "llama3:-bad"), "has an invalid tag '-bad'"),
        (("retry", "{done}"), "succeeded; there is nothing to retry"),
        (
            ("list", "--state", "paused"),
            "--state: 'paused' is not one of queued|running|succeeded|failed|cancelled|active",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message_and_changes_no_download(
    llmctl: Cli, database_url: str, args: tuple[str, ...], message: str
) -> None:
    done = enqueue(database_url, "gpu-1", "qwen2:0.5b")
    start_pulling(database_url)
    succeed(database_url, done.id)
    active = enqueue(database_url, "gpu-1", "llama3")
    before = job_rows(database_url)
    filled = [arg.format(job=active.id, done=done.id) for arg in args]

    result = llmctl("downloads", *filled)
    assert result.code == 2, (result.out, result.err)
    assert message in " ".join(result.err.split()), result.err
    assert job_rows(database_url) == before


# --- telling NATS after the commit -------------------------------------------------------------


async def _collect(nats_url: str, subject: str, action: Callable[[], Any], n: int) -> list[Any]:
    """Run the (blocking) ``action`` while subscribed to ``subject``; the first ``n`` messages."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(subject)
        await flushing.flush(nc, 10)  # the server has the SUB
        result = await asyncio.to_thread(action)
        assert result.code == 0, result.err
        return [await sub.next_msg(timeout=5) for _ in range(n)]
    finally:
        await nc.close()


async def test_cancel_publishes_the_cancelled_event_and_a_cancel_request_after_the_commit(
    llmctl: Cli, database_url: str, nats_url: str, nats_prefix: str
) -> None:
    job = await asyncio.to_thread(enqueue, database_url, "gpu-1", "llama3")
    nats_args = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    messages = await _collect(
        nats_url,
        f"{nats_prefix}.v1.>",
        lambda: llmctl(*nats_args, "downloads", "cancel", job.id),
        2,
    )
    event_msg, control_msg = messages
    assert event_msg.subject == f"{nats_prefix}.v1.downloads.gpu-1.{job.id}"
    event = events.from_wire(event_msg.data)
    assert isinstance(event, events.DownloadCancelled)
    assert (event.job_id, event.model, event.seq) == (job.id, "llama3", job.seq + 1)
    assert control_msg.subject == f"{nats_prefix}.v1.control.cancel"
    assert json.loads(control_msg.data) == {"job_id": job.id}


async def test_retry_publishes_the_queued_event_and_a_trigger_naming_a_recorded_request(
    llmctl: Cli, database_url: str, nats_url: str, nats_prefix: str
) -> None:
    job = await asyncio.to_thread(enqueue, database_url, "gpu-1", "llama3")
    assert (await asyncio.to_thread(llmctl, "downloads", "cancel", job.id)).code == 0
    nats_args = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    event_msg, control_msg = await _collect(
        nats_url,
        f"{nats_prefix}.v1.>",
        lambda: llmctl(*nats_args, "downloads", "retry", job.id),
        2,
    )
    event = events.from_wire(event_msg.data)
    assert (type(event), event.job_id, event.attempt) == (events.DownloadQueued, job.id, 0)
    assert control_msg.subject == f"{nats_prefix}.v1.control.trigger"
    body = json.loads(control_msg.data)
    assert list(body) == ["request_id"]  # a request recorded in the database before it
    assert cycle_request_ids(database_url) == {body["request_id"]}


def test_cancel_succeeds_and_warns_when_nats_cannot_be_reached(
    llmctl: Cli, database_url: str
) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    result = llmctl("--nats-url", "nats://127.0.0.1:1", "downloads", "cancel", job.id)
    assert result.code == 0, result.err
    assert result.out.strip() == f"download/{job.id} cancelled"
    assert "the change is saved, but publishing it on NATS" in " ".join(result.err.split())
    assert llmctl("downloads", "get", job.id, "-o", "json").json()["state"] == "cancelled"


def test_list_shows_bytes_done_of_total_in_human_units_and_raw_bytes_in_wide_and_json(
    llmctl: Cli, database_url: str
) -> None:
    job = enqueue(database_url, "gpu-1", "llama3")
    queued = enqueue(database_url, "gpu-2", "llama3")
    start_pulling(database_url)
    table = {row["ID"]: row for row in table_cells(llmctl("downloads", "list").out)}
    assert (table[job.id]["SIZE"], table[queued.id]["SIZE"]) == ("300 MB/1.0 GB", "-")
    wide = {row["ID"]: row for row in table_cells(llmctl("downloads", "list", "-o", "wide").out)}
    assert wide[job.id]["SIZE"] == "300000000/1000000000"
    (doc,) = [d for d in llmctl("downloads", "list", "-o", "json").json() if d["id"] == job.id]
    assert (doc["completed"], doc["total"]) == (300_000_000, 10**9)
