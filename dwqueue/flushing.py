"""A NATS flush that really waits for everything the client was asked to send.

``nats.aio.client.Client.flush`` sends its PING straight to the socket (nats-py 2.16), ahead of
commands still queued for the client's flusher task: a SUB or PUB issued just before. The PONG
can then come back before the server has seen them, so "subscribed, flushed" did not mean the
server knew the subscription, and a message published from another connection right after was
lost (a plain-NATS watch missed its first event about one time in fifteen). `flush` here first
waits until the queue is written, then does the PING round trip.

Used by `dwqueue.subscriber`, `dwqueue.publisher`, the resolver feed and the CLI's one-shot
publishers.
"""

from __future__ import annotations

import asyncio

import nats.aio.client
import nats.errors

_POLL_S = 0.001


async def flush(nc: nats.aio.client.Client, timeout_s: float) -> None:
    """Return once the server has processed every command sent on ``nc`` so far.

    Raises `nats.errors.FlushTimeoutError` after ``timeout_s``, and what ``nc.flush`` raises.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while nc.pending_data_size and nc.is_connected:
        if loop.time() >= deadline:
            raise nats.errors.FlushTimeoutError
        await asyncio.sleep(_POLL_S)  # the client's flusher task writes the queue meanwhile
    remaining = max(deadline - loop.time(), _POLL_S)
    await nc.flush(timeout=remaining)  # type: ignore[arg-type]
