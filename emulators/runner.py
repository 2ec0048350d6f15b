"""Starting and stopping an emulator: in the caller's event loop, in a thread, or blocking.

`running(host)` is an async context manager for in-process tests; `in_thread(make_host)` runs
the server on its own event loop in a background thread, for sync clients (the official sync
`ollama.Client` would block a shared loop); `serve(host)` blocks until interrupted (the CLI).
Each yields or uses an `Emulator` handle. The flavour modules wrap these with their options.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic

from aiohttp import web

from emulators import faults, server

_SHUTDOWN_TIMEOUT = 0.25  # hung requests (the `hang` fault) must not delay a test's teardown


class Emulator(Generic[server.N]):
    """A listening emulator: its URL, its nodes (state you may read and mutate) and faults."""

    def __init__(self, host: server.Host[server.N], address: str, port: int) -> None:
        self.host = host
        self.address = address
        self.port = port
        self.url = f"http://{address}:{port}"

    @property
    def nodes(self) -> list[server.N]:
        """Every node, by index."""
        return self.host.nodes

    def node_url(self, index: int) -> str:
        """Base URL of node `index` (`<url>/nodes/<index>`); valid for any node count."""
        if not 0 <= index < len(self.nodes):
            raise IndexError(f"no node {index}; there are {len(self.nodes)}")
        return f"{self.url}/nodes/{index}"

    def set_fault(
        self, fault: faults.Fault, endpoint: str = faults.ALL_ENDPOINTS, node: int | None = None
    ) -> None:
        """Arm `fault` on `endpoint` of one node, or of every node when `node` is None."""
        targets = self.nodes if node is None else [self.nodes[node]]
        for target in targets:
            target.faults.set(fault, endpoint)

    def clear_faults(self) -> None:
        """Disarm every fault on every node."""
        for target in self.nodes:
            target.faults.clear()

    def reset(self) -> None:
        """Every node back to its initial models, with no faults and zeroed counters."""
        for target in self.nodes:
            target.reset()


async def start(
    host: server.Host[server.N], address: str, port: int
) -> tuple[web.AppRunner, Emulator[server.N]]:
    """Bind and start serving; port 0 picks a free port. Returns the runner to clean up."""
    runner = web.AppRunner(
        host.app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    await site.start()
    sockets = runner.addresses
    bound_port = int(sockets[0][1]) if sockets else port
    return runner, Emulator(host, address, bound_port)


async def stop(runner: web.AppRunner, host: server.Host[server.N]) -> None:
    """Stop background downloads, then close the listening socket and open connections."""
    await host.close()
    await runner.cleanup()


@contextlib.asynccontextmanager
async def running(
    host: server.Host[server.N], address: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Emulator[server.N]]:
    """Serve `host` in the current event loop for the duration of the block."""
    runner, emulator = await start(host, address, port)
    try:
        yield emulator
    finally:
        await stop(runner, host)


@contextlib.contextmanager
def in_thread(
    make_host: Callable[[], server.Host[server.N]], address: str = "127.0.0.1", port: int = 0
) -> Iterator[Emulator[server.N]]:
    """Serve on a private event loop in a daemon thread; for sync clients and tests.

    Node state is shared with the caller's thread: plain reads and small mutations are fine
    (the GIL), but do not mutate while requests are running if you need exact results.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="llmctl-emulator", daemon=True)
    thread.start()
    host = asyncio.run_coroutine_threadsafe(_make(make_host), loop).result()
    runner, emulator = asyncio.run_coroutine_threadsafe(start(host, address, port), loop).result()
    try:
        yield emulator
    finally:
        asyncio.run_coroutine_threadsafe(stop(runner, host), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _make(make_host: Callable[[], server.Host[server.N]]) -> server.Host[server.N]:
    return make_host()  # built inside the loop: aiohttp objects bind to the running loop


def serve(
    make_host: Callable[[], server.Host[server.N]],
    address: str,
    port: int,
    announce: Callable[[Emulator[server.N]], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C); `announce` is called once the socket listens."""

    async def main() -> None:
        host = make_host()
        runner, emulator = await start(host, address, port)
        if announce is not None:
            announce(emulator)
        try:
            await asyncio.Event().wait()
        finally:
            await stop(runner, host)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
