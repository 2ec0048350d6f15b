"""Resolver processes on one fleet share what they learn, on a real NATS server.

One Postgres database holds a fleet of three Ollama backends serving ``llama3:latest``; every
test follows it with `Resolver.from_database`, in this process or in a child process (a small
script run with this interpreter that prints what it resolves), on NATS subjects of its own.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
import structlog

import migrations
from runtimestate import resolver
from runtimestate.resolver import bulletin, cooldown
from tests import services
from tests.integration.test_resolver_feed import _line, _write
from tests.unit.test_resolver import backend, model

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = "llama3:latest"
FLEET = {name: backend(name, model(MODEL)) for name in ("gpu-1", "gpu-2", "gpu-3")}
Follow = Callable[..., Awaitable[resolver.Resolver]]
EVERY = resolver.Request(models=(MODEL,), policy=resolver.Policy.ROUND_ROBIN)
CHILD = """
import asyncio, json, sys
from runtimestate import resolver

async def main(url, nats_url, prefix, profile):
    r = await resolver.Resolver.from_database(url, nats_url or None, prefix, exploration=0.0)
    policy = "round_robin"
    if profile:
        r.import_profiles(open(profile).read())
        policy = "adaptive"
    request = resolver.Request(models=("llama3:latest",), policy=policy)
    print("ready", flush=True)
    last = None
    try:
        while True:
            seen = [p.backend for p in r.resolve(request).providers()]
            seen = " ".join(seen if profile else sorted(seen))
            if seen != last:
                print(seen, flush=True)
                last = seen
            await asyncio.sleep(0.005)
    finally:
        await r.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def fleet_url(postgres_server: services.Postgres) -> Iterator[str]:
    """A database of this module's own holding the three backends' status."""
    with services.scratch_database(postgres_server) as url:
        migrations.upgrade(url)
        asyncio.run(_write(url, FLEET, {}))
        yield url


@pytest.fixture
async def follow(fleet_url: str) -> AsyncIterator[Follow]:
    """Opens resolvers on the fleet (``follow(nats_url, prefix, **options)``); closes them."""
    opened: list[resolver.Resolver] = []

    async def open_(*args: str, **options: Any) -> resolver.Resolver:
        made = await resolver.Resolver.from_database(fleet_url, *args, **options)
        opened.append(made)
        return made

    yield open_
    for r in opened:
        await r.aclose()


def _provider(r: resolver.Resolver, name: str) -> resolver.Provider:
    return next(p for p in r.resolve(EVERY).providers() if p.backend == name)


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` holds, polled every few milliseconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def _blocked(r: resolver.Resolver, name: str) -> bool:
    return f"{name}/{MODEL}" in r.outcomes.blocked


async def _child(*args: str) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert await _line(child.stdout, 30) == "ready"
    return child


async def _stop(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.kill()
    await child.wait()


async def test_three_failures_in_one_process_cool_the_provider_down_in_another_within_a_second(
    follow: Follow, fleet_url: str, nats_url: str, nats_prefix: str
) -> None:
    a = await follow(nats_url, nats_prefix)
    b = await _child(fleet_url, nats_url, nats_prefix, "")
    assert b.stdout is not None
    try:
        assert await _line(b.stdout, 10) == "gpu-1 gpu-2 gpu-3"
        gpu_1 = _provider(a, "gpu-1")
        for _ in range(3):
            a.record_outcome(gpu_1, ok=False, latency_s=0.05)
        started = time.monotonic()
        assert await _line(b.stdout, 5) == "gpu-2 gpu-3"
        assert time.monotonic() - started < 1.0
    finally:
        await _stop(b)


async def test_profiles_exported_from_one_process_give_the_same_adaptive_ranking_in_a_fresh_one(
    follow: Follow, fleet_url: str, tmp_path: pathlib.Path
) -> None:
    a = await follow(exploration=0.0)
    for name, latency in (("gpu-1", 0.5), ("gpu-2", 2.0), ("gpu-3", 0.1)):
        a.record_outcome(_provider(a, name), ok=True, latency_s=latency)
    a.record_outcome(_provider(a, "gpu-1"), ok=False, latency_s=0.01)
    request = resolver.Request(models=(MODEL,), policy=resolver.Policy.ADAPTIVE)
    ranking = " ".join(p.backend for p in a.resolve(request).providers())
    assert ranking == "gpu-3 gpu-1 gpu-2"
    saved = tmp_path / "profiles.json"
    saved.write_text(json.dumps(a.export_profiles()))
    fresh = await _child(fleet_url, "", "llmctl", str(saved))  # no NATS: only the file
    assert fresh.stdout is not None
    try:
        assert await _line(fresh.stdout, 10) == ranking
    finally:
        await _stop(fresh)


async def _publish(nats_url: str, subject: str, *payloads: bytes) -> None:
    nc = await nats.connect(nats_url)
    try:
        for payload in payloads:
            await nc.publish(subject, payload)
        await nc.flush()
    finally:
        await nc.close()


def _opening(origin: str, backend_name: str, v: int = 1) -> bytes:
    entry = bulletin.Entry(MODEL, 0.1, 0.5, 3, bulletin.Breaker(bulletin.OPENED, 20.0, 30.0))
    doc = json.loads(bulletin.encode(bulletin.Bulletin(origin, backend_name, (entry,))))
    return json.dumps({**doc, "v": v}).encode()


async def test_a_process_ignores_its_own_outcome_messages(
    follow: Follow, nats_url: str, nats_prefix: str
) -> None:
    a = await follow(nats_url, nats_prefix)
    assert a._exchange is not None
    subject = f"{nats_prefix}.v1.outcomes"
    await _publish(nats_url, f"{subject}.gpu-1", _opening(a._exchange.origin, "gpu-1"))
    await _publish(nats_url, f"{subject}.gpu-2", _opening("someone-else", "gpu-2"))
    await _until(lambda: _blocked(a, "gpu-2"), 5, "the other process's opening applied")
    assert not _blocked(a, "gpu-1")


async def test_a_bad_or_newer_outcome_message_is_ignored_with_one_log_line(
    follow: Follow, nats_url: str, nats_prefix: str
) -> None:
    a = await follow(nats_url, nats_prefix)
    subject = f"{nats_prefix}.v1.outcomes"
    with structlog.testing.capture_logs() as logged:
        await _publish(nats_url, f"{subject}.gpu-1", b"{garbage", _opening("b", "gpu-1", v=2))
        await _publish(nats_url, f"{subject}.gpu-2", _opening("someone-else", "gpu-2"))
        await _until(lambda: _blocked(a, "gpu-2"), 5, "the good message after them applied")
    warnings = [e["event"] for e in logged if e["log_level"] == "warning"]
    assert warnings == ["resolver_bad_outcomes_message", "resolver_outcomes_too_new"]
    assert not _blocked(a, "gpu-1")
    assert a.resolve(EVERY).provider.backend in {"gpu-1", "gpu-3"}


async def test_a_closing_reaches_the_other_process_and_nothing_applied_is_echoed(
    follow: Follow, nats_url: str, nats_prefix: str
) -> None:
    heard: list[tuple[str, str]] = []
    listener = await nats.connect(nats_url)

    async def hear(msg: nats.aio.msg.Msg) -> None:
        heard.append((msg.subject.rpartition(".")[2], json.loads(msg.data)["origin"]))

    await listener.subscribe(f"{nats_prefix}.v1.outcomes.*", cb=hear)
    await listener.flush()
    clock = _Clock()
    try:
        a = await follow(nats_url, nats_prefix, clock=clock)
        b = await follow(nats_url, nats_prefix)
        assert a._exchange is not None
        assert b._exchange is not None
        for _ in range(3):
            a.record_outcome(_provider(a, "gpu-1"), ok=False, latency_s=0.05)
        await _until(lambda: _blocked(b, "gpu-1"), 1, "the opening reached b")
        assert not b._exchange.pending  # applying marked nothing to send
        clock.now += cooldown.Policy().cooldown_s  # a's trial is due; b's opening is not over
        trial = a.resolve(EVERY).provider
        assert trial.backend == "gpu-1"
        assert trial.trial is not None
        a.record_outcome(trial, ok=True, latency_s=0.05)
        await _until(lambda: not _blocked(b, "gpu-1"), 1, "the closing reached b")
        b.record_outcome(_provider(b, "gpu-2"), ok=True, latency_s=0.2)  # b's first message
        origin_b = b._exchange.origin
        await _until(lambda: ("gpu-2", origin_b) in heard, 5, "b's own outcome sent")
        assert [m for m in heard if m[1] == origin_b] == [("gpu-2", origin_b)]
    finally:
        await listener.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_nats_going_away_loses_only_the_sharing(
    fresh_nats_server: services.NatsServer, follow: Follow, nats_prefix: str
) -> None:
    a = await follow(fresh_nats_server.url, nats_prefix)
    b = await follow(fresh_nats_server.url, nats_prefix)
    fresh_nats_server.stop()
    await _until(lambda: not _connected(a) and not _connected(b), 10, "both saw NATS go")
    for _ in range(3):
        a.record_outcome(_provider(a, "gpu-1"), ok=False, latency_s=0.05)
    assert _blocked(a, "gpu-1")
    assert a.resolve(EVERY).provider.backend in {"gpu-2", "gpu-3"}
    fresh_nats_server.start()
    await _until(lambda: _connected(a) and _connected(b), 10, "both reconnected")
    for r in (a, b):  # a PING after the re-sent SUBs: the server has them once it answers
        assert r._exchange is not None
        await r._exchange._client.flush(timeout=5)
    for _ in range(3):
        a.record_outcome(_provider(a, "gpu-2"), ok=False, latency_s=0.05)
    await _until(lambda: _blocked(b, "gpu-2"), 2, "sharing resumed")


def _connected(r: resolver.Resolver) -> bool:
    assert r._exchange is not None
    return bool(r._exchange._client.is_connected)


async def test_a_resolver_opened_without_sharing_neither_applies_nor_sends(
    follow: Follow, nats_url: str, nats_prefix: str
) -> None:
    a = await follow(nats_url, nats_prefix)
    b = await follow(nats_url, nats_prefix)
    alone = await follow(nats_url, nats_prefix, share_outcomes=False)
    for _ in range(3):
        alone.record_outcome(_provider(alone, "gpu-3"), ok=False, latency_s=0.05)
        a.record_outcome(_provider(a, "gpu-1"), ok=False, latency_s=0.05)
    await _until(lambda: _blocked(b, "gpu-1"), 1, "a's opening reached b")
    assert not _blocked(alone, "gpu-1")  # delivered to b, so it would have been to alone
    assert not _blocked(b, "gpu-3")
