"""A download worker process for crash tests: runs download cycles until killed.

python -m tests.integration.download_worker DATABASE_URL NATS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

from dwqueue import publisher
from runtimestate import database, downloads, state


async def main(url: str, nats_url: str, prefix: str) -> None:
    sink = publisher.Publisher(nats_url, prefix=prefix)
    await sink.start()
    engine = database.create_async_engine(url)
    settings = state.Settings(
        downloads=downloads.Settings(lease=dt.timedelta(seconds=1.5), heartbeat_s=0.2)
    )
    runtime = state.State(engine, sink=sink, settings=settings, environ={})
    print("ready", flush=True)
    while True:
        await runtime.run_download_cycle()
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
