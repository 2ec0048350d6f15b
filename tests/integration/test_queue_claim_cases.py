"""One table of claim cases, held against both claim paths: `dwqueue.claims.sqlite` (Python, on
SQLite) and the ``dwqueue_claim`` function (plpgsql, on Postgres) must lease the same jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import migrations
from dwqueue import claims, jobs, leases, queue, schema
from runtimestate import database

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class Case:
    """Jobs queued oldest first (``queue[i]`` is job i's backend), the claim, the jobs leased."""

    name: str
    queue: list[str]
    n: int
    expected: list[int]  # indices into queue
    limits: dict[str, int] = dataclasses.field(default_factory=dict)
    default_limit: int = 1
    running: dict[str, int] = dataclasses.field(default_factory=dict)  # before the claim
    later: frozenset[int] = frozenset()  # indices of jobs not yet due


def _rows(backends: int, each: int) -> list[str]:
    return [f"b{b}" for b in range(backends) for _ in range(each)]


CASES = [
    Case("oldest first, one per backend", ["a", "a", "b", "c"], 3, [0, 2, 3]),
    Case(
        "interleaved backends fill up to a limit of two",
        ["a", "b", "a", "b", "a", "b", "c"],
        8,
        [0, 1, 2, 3, 6],
        default_limit=2,
    ),
    Case("a limit of zero runs nothing", ["paused", "gpu"], 5, [1], limits={"paused": 0}),
    Case(
        "running jobs count toward the limit",
        ["a", "a", "a", "b"],
        4,
        [0, 3],
        limits={"a": 2},
        running={"a": 1},
    ),
    Case("jobs not yet due wait", ["a", "b", "c"], 3, [0, 2], later=frozenset({1})),
    Case("fewer jobs due than asked for", ["a", "b"], 8, [0, 1]),
    Case(
        "one job behind many of a backend full before the claim",
        ["busy"] * 40 + ["idle"],
        1,
        [40],
        running={"busy": 1},
    ),
    Case(
        "one job behind two full backends, each longer than a window",
        ["a"] * 30 + ["b"] * 30 + ["c"],
        1,
        [60],
        running={"a": 1, "b": 1},
    ),
    Case(
        "eight backends that fill up during the claim, twenty jobs each",
        _rows(10, 20),
        8,
        [0, 20, 40, 60, 80, 100, 120, 140],
    ),
    Case(
        "backends' own limits and the default",
        _rows(5, 12),
        8,
        [0, 12, 13, 24, 25, 26, 36, 37],
        limits={"b0": 1, "b1": 2, "b2": 3},
        default_limit=2,
    ),
    Case("a claim of none", ["a"], 0, []),
]


async def _claimed(session: AsyncSession, case: Case) -> list[int]:
    await session.execute(sa.delete(schema.download_jobs))
    ids = []
    for i, backend in enumerate(case.queue):
        due = NOW + dt.timedelta(minutes=5) if i in case.later else T0 + dt.timedelta(seconds=i)
        ids.append((await queue.enqueue(session, backend, f"model-{i}", now=due)).job.id)
    for backend, count in case.running.items():
        for k in range(count):
            job = (await queue.enqueue(session, backend, f"busy-{k}", now=T0)).job
            running = {"state": jobs.JobState.RUNNING.value, "lease_owner": "other"}
            where = schema.download_jobs.c.id == job.id
            await session.execute(sa.update(schema.download_jobs).where(where).values(running))
    await session.commit()
    changes = await leases.claim(
        session,
        "w1",
        limits=case.limits,
        default_limit=case.default_limit,
        n=case.n,
        now=NOW,
    )
    await session.commit()
    assert all(c.job.state is jobs.JobState.RUNNING for c in changes)
    return sorted(ids.index(c.job.id) for c in changes)


async def test_both_claim_paths_lease_the_same_jobs_for_every_case(session: AsyncSession) -> None:
    claimed = {case.name: await _claimed(session, case) for case in CASES}
    assert claimed == {case.name: case.expected for case in CASES}


@pytest.mark.parametrize("n", [1, 2, 8, 100])
def test_a_claims_window_leaves_room_past_the_jobs_it_leases(n: int) -> None:
    assert claims.window(n) > n + 8


def _claim_functions(url: str) -> list[tuple[int, str]]:
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            query = "SELECT pronargs, prosrc FROM pg_proc WHERE proname = 'dwqueue_claim'"
            return sorted((n, src) for n, src in connection.execute(sa.text(query)))
    finally:
        engine.dispose()


def test_the_claim_function_at_head_is_the_versioned_file_the_code_calls(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    functions = dict(_claim_functions(postgres_url))
    called = claims.function_text(claims.FUNCTION_VERSION)
    assert functions[8] == called.split("$$")[1]  # the body, as the file has it
    assert functions[7] == claims.function_text(2).split("$$")[1]  # for older replicas


def test_revision_0008_adds_the_eight_argument_claim_and_its_downgrade_drops_it(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    assert [n for n, _ in _claim_functions(postgres_url)] == [7, 8]
    migrations.downgrade(postgres_url, "0007")
    assert [n for n, _ in _claim_functions(postgres_url)] == [7]
    assert migrations.current(postgres_url) == "0007"


@pytest.mark.parametrize(("locked_rows", "expected"), [(28, ["x", "b"]), (29, ["x"])])
async def test_a_postgres_claim_pass_reads_the_window_the_code_computes(
    postgres_url: str, locked_rows: int, expected: list[str]
) -> None:
    # Another claimer holds backend a's advisory lock: the claim passes over a's rows without
    # finding a full backend, so one pass of claims.window(2) rows is all it reads.
    assert claims.window(2) == 30
    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    holder = database.create_sync_engine(postgres_url)
    try:
        async with database.session_factory(engine)() as session:
            backends = ["x"] + ["a"] * locked_rows + ["b"]
            for i, backend in enumerate(backends):
                due = T0 + dt.timedelta(seconds=i)
                await queue.enqueue(session, backend, f"model-{i}", now=due)
            await session.commit()
            with holder.begin() as other:
                lock = "SELECT pg_advisory_xact_lock(1819110755, hashtext('a'))"
                other.execute(sa.text(lock))
                changes = await leases.claim(session, "w1", n=2, now=NOW)
                await session.commit()
    finally:
        holder.dispose()
        await engine.dispose()
    assert [c.job.backend for c in changes] == expected
