"""Bring the next backend cycle forward after a CLI change: best effort, never an error.

Called by CLI commands after each committed change (``backend add``, ``model add``, ``apply``,
``pool ...``): `request_cycle` records a cycle request in the database
(`runtimestate.reconcile.cyclerequests`: one small write) and publishes its id,
``{"request_id": "..."}``, on ``<prefix>.v1.control.trigger`` on the configured NATS URL, or on
the embedded server a running ``llmctl serve`` announced in the data directory. A running
``serve`` that finds the request in the database runs a backend cycle at once (and a download
cycle), so a new declaration starts pulling within about a second; a message naming no recorded
request is ignored (`controller.control`). With no NATS to reach, nothing is written or sent:
the next scheduled cycle picks the change up (the database is the truth). The configured URL is
used with the configured credentials (`dwqueue.natsauth`), the embedded server with the data
directory's token (`embedded_nats.running_token`). Raises only `natsauth.NatsRefused`, when a
configured server refuses the credentials or TLS: the user has something to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import pathlib

from controller import datadir, embedded_nats
from dwqueue import natsauth

TRIGGER = "v1.control.trigger"
CANCEL = "v1.control.cancel"


def subject(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"


@dataclasses.dataclass(frozen=True)
class Target:
    """A NATS server to talk to and how: ``discovered_in`` is the data directory when it is
    the embedded server of a running ``serve`` (its URL may change; its token is ``auth``)."""

    url: str
    auth: natsauth.NatsAuth
    discovered_in: pathlib.Path | None = None


def target(
    nats_url: str | None,
    auth: natsauth.NatsAuth | None = None,
    data_dir: pathlib.Path | None = None,
) -> Target | None:
    """The configured URL with ``auth``, else a running embedded server with its token."""
    if nats_url:
        return Target(nats_url, auth or natsauth.NatsAuth())
    directory = data_dir or datadir.from_environment()
    url = embedded_nats.running_url(directory)
    if url is None:
        return None
    return Target(url, natsauth.NatsAuth(token=embedded_nats.running_token(directory)), directory)


def target_url(nats_url: str | None, data_dir: pathlib.Path | None = None) -> str | None:
    """Where to send a trigger: the configured URL, else a running embedded server, else None."""
    found = target(nats_url, None, data_dir)
    return None if found is None else found.url


async def publish(
    url: str,
    subject_: str,
    payload: bytes,
    timeout_s: float = 1.0,
    auth: natsauth.NatsAuth | None = None,
) -> bool:
    """Connect, publish one message, flush; False when NATS is away. Raises
    `natsauth.NatsRefused` when the server refuses ``auth`` (or a file of it is unreadable)."""
    # Imported here: a command that finds no NATS to notify never pays for the client.
    import nats.errors

    from dwqueue import connector, flushing

    client = connector.GuardedClient()
    try:
        await connector.dial(
            client,
            url,
            auth or natsauth.NatsAuth(),
            timeout_s=timeout_s,
            name="llmctl-cli",
            connect_timeout=timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
        )
    except natsauth.NatsUnreachable:
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


def payload(request_id: str) -> bytes:
    """The body of a trigger naming the recorded cycle request ``request_id``."""
    return json.dumps({"request_id": request_id}, separators=(",", ":")).encode()


def request_id(body: bytes) -> str | None:
    """The ``request_id`` a trigger names, or None when the message names none."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    named = parsed.get("request_id") if isinstance(parsed, dict) else None
    return named if isinstance(named, str) else None


async def record(database_url: str) -> str | None:
    """Record a cycle request in its own transaction; its id, or None when the database
    cannot take it (the change is committed anyway: the scheduled cycle sees it)."""
    import sqlalchemy.exc

    from runtimestate import database, errors
    from runtimestate.reconcile import cyclerequests

    engine = database.create_async_engine(database_url)
    try:
        with database.guarded():
            async with database.session_factory(engine)() as session, session.begin():
                return await cyclerequests.record(session, dt.datetime.now(dt.UTC))
    except (errors.DatabaseUnavailable, sqlalchemy.exc.DBAPIError):
        return None
    finally:
        await engine.dispose()


def request_cycle(
    nats_url: str | None,
    prefix: str = "llmctl",
    data_dir: pathlib.Path | None = None,
    auth: natsauth.NatsAuth | None = None,
    *,
    database_url: str,
) -> bool:
    """Ask a running ``serve`` for a backend cycle now; True when the request was sent.

    Records the request in the database at ``database_url`` first (nothing when there is no
    NATS to send it on). Synchronous, for typer commands (do not call it from a running event
    loop). Takes at most about a second when NATS does not answer. Raises
    `natsauth.NatsRefused` when the configured server refuses ``auth``; the embedded server
    refusing (a token this user cannot read) is only a False.
    """
    found = target(nats_url, auth, data_dir)
    if found is None:
        return False

    async def send() -> bool:
        recorded = await record(database_url)
        if recorded is None:
            return False
        body = payload(recorded)
        return await publish(found.url, subject(prefix, TRIGGER), body, auth=found.auth)

    try:
        return asyncio.run(send())
    except natsauth.NatsRefused:
        if found.discovered_in is None:
            raise
        return False
