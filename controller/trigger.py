"""Bring the next backend cycle forward after a CLI change: best effort, never an error.

Called by CLI commands after each committed change (``backend add``, ``model add``, ``apply``,
``pool ...``): `request_cycle` publishes ``{}`` on ``<prefix>.v1.control.trigger`` on the
configured NATS URL, or on the embedded server a running ``llmctl serve`` announced in the data
directory. A running ``serve`` then runs a backend cycle at once (and a download cycle), so a new
declaration starts pulling within about a second. With no NATS to reach, nothing happens: the
next scheduled cycle picks the change up (the database is the truth). Never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib

from controller import datadir, embedded_nats

TRIGGER = "v1.control.trigger"
CANCEL = "v1.control.cancel"


def subject(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"


def target_url(nats_url: str | None, data_dir: pathlib.Path | None = None) -> str | None:
    """Where to send a trigger: the configured URL, else a running embedded server, else None."""
    if nats_url:
        return nats_url
    return embedded_nats.running_url(data_dir or datadir.from_environment())


async def publish(url: str, subject_: str, payload: bytes, timeout_s: float = 1.0) -> bool:
    """Connect, publish one message, flush; False (never an exception) when NATS is away."""
    # Imported here: a command that finds no NATS to notify never pays for the client.
    import nats
    import nats.errors

    from dwqueue import flushing

    try:
        client = await nats.connect(
            url,
            connect_timeout=timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            name="llmctl-cli",
        )
    except (TimeoutError, nats.errors.Error, OSError):
        return False
    try:
        await client.publish(subject_, payload)
        await flushing.flush(client, timeout_s)
    except (TimeoutError, nats.errors.Error, OSError):
        return False
    finally:
        with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
            await client.close()
    return True


def request_cycle(
    nats_url: str | None, prefix: str = "llmctl", data_dir: pathlib.Path | None = None
) -> bool:
    """Ask a running ``serve`` for a backend cycle now; True when the request was sent.

    Synchronous, for typer commands (do not call it from a running event loop; await
    `publish` there). Takes at most about a second when NATS does not answer.
    """
    url = target_url(nats_url, data_dir)
    if url is None:
        return False
    body = json.dumps({}).encode()
    return asyncio.run(publish(url, subject(prefix, TRIGGER), body))
