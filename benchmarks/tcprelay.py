"""A bare TCP relay for `benchmarks/gateway.py`'s ``--floor``: the least any proxy process adds.

``python tcprelay.py PORT...`` listens on a free loopback port for each ``PORT``, prints
``listening on <port> <port>...`` (in the same order), and copies bytes both ways between each
connection it accepts and a new connection to ``127.0.0.1:PORT``: no HTTP, no routing, no
parsing, one asyncio process, as the gateway is one. In front of the
emulators it measures what putting any Python process in the path costs on this machine (the
extra hops, the wake-ups, the CPU it shares), which the gateway's added latency includes too.
A script: must not be imported by the packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def _handler(upstream: int):  # asyncio's connection callback
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


async def _relay(upstreams: list[int]) -> None:
    servers = [await asyncio.start_server(_handler(u), "127.0.0.1", 0) for u in upstreams]
    ports = " ".join(str(s.sockets[0].getsockname()[1]) for s in servers)
    print(f"listening on {ports}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(_relay([int(port) for port in sys.argv[1:]]))
