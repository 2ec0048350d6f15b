"""`Resolver.from_database` in another process follows what the real controller does.

The controller here is a `State` running real backend and download cycles against an emulated
Ollama node, publishing on real NATS. A child process resolves through
`Resolver.from_database`, following NATS or polling the database. The issue's bar: a model the
controller just pulled is seen within one cycle plus a second; a backend that is no longer
declared stops being routed to as soon as the cycle that noticed it has published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import sys
import time

import nats
import pytest

from dwqueue import jobs, publisher, queue
from emulators import ollama
from runtimestate import credentials, resolver, state
from runtimestate.desired import spec, store
from runtimestate.reconcile import steps
from tests.integration.cycle_fixtures import QUICK, Fleet, fleet_file

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Resolves MODEL (argv 4) over and over; prints each change of the backend set that serves it.
CHILD = """
import asyncio, sys
from runtimestate import resolver

async def main(url, nats_url, prefix, model):
    r = await resolver.Resolver.from_database(url, nats_url or None, prefix)
    request = resolver.Request(models=(model,))
    print("ready", flush=True)
    last = None
    try:
        while True:
            try:
                serving = sorted(p.backend for p in r.resolve(request).providers())
            except resolver.ResolveError:
                serving = []
            if serving != last:
                print("serving", ",".join(serving) or "-", flush=True)
                last = serving
            await asyncio.sleep(0.005)
    finally:
        await r.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


class Child:
    """The resolver process and what it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        return raw.decode().strip()

    async def until(self, expected: str, timeout_s: float) -> float:
        """Seconds until the child prints ``expected`` (other lines are skipped)."""
        started = time.monotonic()
        deadline = started + timeout_s
        while (line := await self.line(max(0.01, deadline - time.monotonic()))) != expected:
            assert line.startswith("serving"), line
        return time.monotonic() - started


async def _child(url: str, nats_url: str, prefix: str, model: str) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, nats_url, prefix, model,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    child = Child(process)
    assert await child.line(30) == "ready"
    return child


async def _stop(child: Child) -> None:
    if child.process.returncode is None:
        child.process.kill()
    await child.process.wait()


def _publishing(prefix: str) -> state.Settings:
    """The fast test settings, with the cycle publishing under ``prefix``."""
    return dataclasses.replace(QUICK, cycle=dataclasses.replace(QUICK.cycle, prefix=prefix))


async def _pull_everything(fleet: Fleet) -> None:
    """Download cycles until no download is queued or running."""
    active = [jobs.JobState.QUEUED, jobs.JobState.RUNNING]
    for _ in range(100):
        await fleet.state.run_download_cycle()
        await fleet.state.downloads.drain(5.0)
        if not await fleet.tx(lambda s: queue.list_jobs(s, states=active)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("downloads never finished")


@pytest.mark.parametrize("follow", ["nats", "database"])
async def test_a_model_the_controller_pulled_is_resolved_elsewhere_within_a_cycle_and_a_second(
    migrated_url: str, nats_url: str, nats_prefix: str, follow: str
) -> None:
    sink = publisher.Publisher(nats_url, prefix=nats_prefix)
    await sink.start()
    fleet = Fleet(migrated_url, settings=_publishing(nats_prefix), sink=sink)
    try:
        async with ollama.running(installed=["llama3:latest"]) as emu:
            spec = {"gpu-1": ("ollama", emu.url, "managed")}
            await fleet.apply(fleet_file(spec, ["llama3", "qwen2:0.5b"]))
            report = await fleet.state.run_backend_cycle()
            assert [a.model for a in report.plan.of(steps.Pull)] == ["qwen2:0.5b"]
            child = await _child(
                migrated_url, nats_url if follow == "nats" else "", nats_prefix, "qwen2:0.5b"
            )
            try:
                assert await child.line(10) == "serving -"
                await _pull_everything(fleet)  # on the node now, not yet in any status
                started = time.monotonic()
                report = await fleet.state.run_backend_cycle()  # observes it, commits, publishes
                cycle_s = time.monotonic() - started
                assert not report.plan.mutating
                waited = await child.until("serving gpu-1", 10) + cycle_s
            finally:
                await _stop(child)
    finally:
        await fleet.close()
        await sink.close()
    assert waited < cycle_s + 1.0, f"seen {waited:.2f} s after the cycle began ({cycle_s:.2f} s)"


async def test_a_backend_no_longer_declared_is_dropped_elsewhere_as_the_cycle_publishes(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> None:
    sink = publisher.Publisher(nats_url, prefix=nats_prefix)
    await sink.start()
    fleet = Fleet(migrated_url, settings=_publishing(nats_prefix), sink=sink)
    try:
        async with ollama.running(nodes=2, installed=["llama3:latest"]) as emu:
            spec = {
                "gpu-1": ("ollama", emu.node_url(0), "managed"),
                "gpu-2": ("ollama", emu.node_url(1), "managed"),
            }
            await fleet.apply(fleet_file(spec, ["llama3"]))
            await fleet.state.run_backend_cycle()
            # With NATS the child re-reads the database only every 30 s: a drop seen within a
            # second came from the cycle's removal message.
            child = await _child(migrated_url, nats_url, nats_prefix, "llama3")
            try:
                assert await child.line(10) == "serving gpu-1,gpu-2"
                await fleet.tx(lambda s: store.delete_backend(s, "gpu-2"))
                await fleet.state.run_backend_cycle()
                waited = await child.until("serving gpu-1", 10)
            finally:
                await _stop(child)
    finally:
        await fleet.close()
        await sink.close()
    assert waited < 1.0


async def test_a_removal_message_drops_the_backend_and_a_bad_message_changes_nothing(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> None:
    fleet = Fleet(migrated_url)
    try:
        async with ollama.running(nodes=2, installed=["llama3:latest"]) as emu:
            spec = {
                "gpu-1": ("ollama", emu.node_url(0), "managed"),
                "gpu-2": ("ollama", emu.node_url(1), "managed"),
            }
            await fleet.apply(fleet_file(spec, ["llama3"]))
            await fleet.state.run_backend_cycle()  # both statuses are in the database now
        r = await resolver.Resolver.from_database(migrated_url, nats_url, nats_prefix)
        try:
            request = resolver.Request(models=("llama3",))
            assert sorted(p.backend for p in r.resolve(request).providers()) == ["gpu-1", "gpu-2"]
            nc = await nats.connect(nats_url)
            try:
                for payload in (b"[1, 2]", b'{"removed": true}', b"not json"):
                    await nc.publish(f"{nats_prefix}.v1.state.gpu-1", payload)
                await nc.publish(
                    f"{nats_prefix}.v1.state.gpu-2", b'{"name":"gpu-2","removed":true}'
                )
                await nc.flush()
            finally:
                await nc.close()
            for _ in range(200):
                if "gpu-2" not in r.index().backends:
                    break
                await asyncio.sleep(0.01)
            assert [p.backend for p in r.resolve(request).providers()] == ["gpu-1"]
        finally:
            await r.aclose()
    finally:
        await fleet.close()


async def test_from_state_hands_out_credentials_of_backends_declared_after_it_was_built(
    migrated_url: str,
) -> None:
    environ = {"GPU_KEY": "sk-node-secret"}
    fleet = Fleet(migrated_url)
    await fleet.state.aclose()
    fleet.state = state.State(fleet.engine, settings=QUICK, environ=environ)  # probes use the key
    keyed = credentials.Credentials(credentials.CredentialKind.ENV, env_var="GPU_KEY")
    try:
        async with ollama.running(nodes=2, installed=["llama3:latest"]) as emu:
            # Built before any cycle; the key is read from this environment when asked for.
            r = resolver.Resolver.from_state(fleet.state, environ=environ)
            await fleet.apply(fleet_file({"gpu-1": ("ollama", emu.node_url(0), "none")}, []))
            await fleet.state.run_backend_cycle()
            request = resolver.Request(models=("llama3",))
            first = r.resolve(request).provider
            assert (first.backend, first.credentials()) == ("gpu-1", None)
            added = spec.make_backend("gpu-2", "ollama", emu.node_url(1), credentials=keyed)
            await fleet.tx(lambda s: store.add_backend(s, added, pools=()))
            await fleet.state.run_backend_cycle()  # a backend in no pool is still observed
            second = next(p for p in r.resolve(request).providers() if p.backend == "gpu-2")
            secret = second.credentials()
            assert secret is not None
            assert secret.reveal() == "sk-node-secret"
    finally:
        await fleet.close()
