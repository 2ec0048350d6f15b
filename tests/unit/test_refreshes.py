"""Status refresh requests: one task per backend, no request lost, none run twice at once."""

from __future__ import annotations

import asyncio

from runtimestate.reconcile import refreshes


class Recorder:
    """A refresh that blocks until released, recording each start and the overlap."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running: set[str] = set()
        self.overlapped = False
        self.release = asyncio.Event()

    async def __call__(self, backend: str) -> None:
        self.overlapped |= backend in self.running
        self.running.add(backend)
        self.started.append(backend)
        try:
            await self.release.wait()
        finally:
            self.running.discard(backend)


async def test_requests_during_a_refresh_run_it_once_more_after_it() -> None:
    recorder = Recorder()
    pending = refreshes.Refreshes(recorder)
    pending.request("gpu-0")
    pending.request("gpu-1")
    await asyncio.sleep(0)
    assert recorder.started == ["gpu-0", "gpu-1"]
    for _ in range(3):  # a burst of endings while gpu-0's refresh runs
        pending.request("gpu-0")
    recorder.release.set()
    await pending.drain()
    assert recorder.started == ["gpu-0", "gpu-1", "gpu-0"]
    assert not recorder.overlapped


async def test_a_request_after_the_last_check_starts_a_new_refresh() -> None:
    seen: list[str] = []
    pending = refreshes.Refreshes(lambda name: _record(seen, name))
    pending.request("gpu-0")
    await pending.drain()
    pending.request("gpu-0")
    await pending.drain()
    assert seen == ["gpu-0", "gpu-0"]


async def test_a_failing_refresh_is_logged_and_the_next_request_still_runs() -> None:
    calls: list[str] = []

    async def failing(name: str) -> None:
        calls.append(name)
        raise RuntimeError("boom")

    pending = refreshes.Refreshes(failing)
    pending.request("gpu-0")
    await pending.drain()
    pending.request("gpu-0")
    await pending.drain()
    assert calls == ["gpu-0", "gpu-0"]


async def test_aclose_cancels_refreshes_in_flight() -> None:
    recorder = Recorder()
    pending = refreshes.Refreshes(recorder)
    pending.request("gpu-0")
    await asyncio.sleep(0)
    assert recorder.running == {"gpu-0"}
    await pending.aclose()
    assert recorder.running == set()
    await pending.drain()  # nothing left to wait for


async def _record(seen: list[str], name: str) -> None:
    seen.append(name)
