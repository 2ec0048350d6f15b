"""The JetStream stream that replays the latest download event of each job: how it is declared.

`Settings` says how (storage, age, size, and how long to keep asking a JetStream that does not
answer yet); `declare` creates the stream ``<PREFIX>_DOWNLOADS`` over
``<prefix>.v1.downloads.>`` with one message per subject, or updates it when it exists with
another configuration. `NOT_ANSWERING` are the errors of a JetStream that is enabled but not
ready (just started, electing a leader), which `dwqueue.publisher.Publisher` asks again; any
other error is an answer. No logging, no retries here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from dwqueue import events

_STREAM_EXISTS_WITH_OTHER_CONFIG = 10058
NOT_ANSWERING = (
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.TimeoutError,
    TimeoutError,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the JetStream stream that replays the latest event per job is declared."""

    enabled: bool = True
    storage: api.StorageType = api.StorageType.FILE
    max_age: dt.timedelta = dt.timedelta(days=1)
    max_bytes: int = 256 * 1024 * 1024
    retry_for: dt.timedelta = dt.timedelta(minutes=2)  # JetStream offered but not answering
    first_retry_s: float = 0.25  # doubled after each failure, up to 8 s


async def declare(nc: Client, prefix: str, settings: Settings, timeout_s: float) -> None:
    """Create or update the replay stream of ``prefix``; raises what nats-py raises."""
    config = api.StreamConfig(
        name=events.stream_name(prefix),
        subjects=[events.downloads_root(prefix) + ".>"],
        storage=settings.storage,
        max_msgs_per_subject=1,
        max_age=settings.max_age.total_seconds(),
        max_bytes=settings.max_bytes,
        discard=api.DiscardPolicy.OLD,
    )
    js = nc.jetstream(timeout=timeout_s)
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _STREAM_EXISTS_WITH_OTHER_CONFIG:
            raise
        await js.update_stream(config)
