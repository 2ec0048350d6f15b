"""The controller's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``, ``/v1/state``.

Started by `controller.composition` on ``http_address`` (loopback by default) with what each
endpoint reads passed in: the metrics, a readiness check and the snapshot getter. Read-only; it
never changes anything and never blocks on a slow database for long (the readiness check has a
short timeout of its own).

- ``/healthz``: 200 while the process serves requests (liveness).
- ``/readyz``: 200 when the database answers ``SELECT 1`` and the scheduler runs, else 503 with
  the failing checks as JSON.
- ``/metrics``: Prometheus text format.
- ``/v1/state``: the latest snapshot, each backend as `snapshot.state_to_dict`; it needs the
  bearer token when one is configured (`controller.httpauth`, which also gives the TLS context).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

import prometheus_client
from aiohttp import web

from controller import httpauth, metrics
from runtimestate import snapshot

Checks = Callable[[], Awaitable[Mapping[str, str | None]]]


@dataclasses.dataclass(frozen=True)
class Sources:
    """What the endpoints read. ``ready`` returns check name -> None (ok) or the problem."""

    metrics: metrics.Metrics
    ready: Checks
    snapshot: Callable[[], snapshot.Snapshot]


def build(sources: Sources, access: httpauth.Access | None = None) -> web.Application:
    app = web.Application(middlewares=[(access or httpauth.Access()).middleware()])

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await sources.ready()
        failing = {name: problem for name, problem in checks.items() if problem}
        body = {"status": "unready" if failing else "ready", "checks": dict(checks)}
        return web.json_response(body, status=503 if failing else 200)

    async def metrics_(_: web.Request) -> web.Response:
        return web.Response(
            body=sources.metrics.render(),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def state(_: web.Request) -> web.Response:
        taken = sources.snapshot()
        return web.json_response(
            {
                "cycle": taken.cycle,
                "takenAt": None if taken.taken_at is None else taken.taken_at.isoformat(),
                "backends": [snapshot.state_to_dict(s) for _, s in sorted(taken.backends.items())],
            }
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_)
    app.router.add_get("/v1/state", state)
    return app


class Server:
    """The listening site; `start` binds (port 0 picks one), `stop` closes. HTTPS when
    ``access`` has a TLS context."""

    def __init__(
        self, sources: Sources, host: str, port: int, access: httpauth.Access | None = None
    ) -> None:
        access = access or httpauth.Access()
        app = build(sources, access)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._host = host
        self._port = port
        self._tls = access.tls
        self.port = port

    async def start(self) -> None:
        """Bind and serve. Raises OSError when the address is taken."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
