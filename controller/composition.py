"""The composition root: `Controller` builds everything ``llmctl serve`` runs, once, and runs it.

From `controller.settings.Settings` it builds the database engine (migrated at start unless
``migrate=False``), NATS (the configured URL, else an embedded ``nats-server``), one
`dwqueue.publisher.Publisher`, the `runtimestate.state.State`, the metrics, an APScheduler
``AsyncIOScheduler`` and the HTTP endpoints. The scheduler's jobs only trigger work, with
``max_instances=1``, ``coalesce=True`` and a misfire grace time. Before anything starts, the
HTTP endpoint's token and TLS are read (`controller.httpauth`): a non-loopback listener without
a token is refused unless allowed. The scheduler's jobs:

- the backend cycle, on an interval or a cron expression;
- the download cycle (claim queued pulls, start them), every ``download_interval_s``;
- the lease reaper (requeue jobs whose worker died) and the download gauges.

A message on ``<prefix>.v1.control.trigger`` naming a cycle request the database holds runs a
backend cycle, then a download cycle, at most once per ``trigger_min_interval_s`` (triggers
arriving meanwhile coalesce into one more run); ``<prefix>.v1.control.cancel`` with
``{"job_id": ...}`` makes this replica check that job's row at once and stop its pull when the
database says it was cancelled (`controller.control`: the message alone does nothing). A
failing job is logged, counted (``llmctl_errors_total``) and skipped on later ticks with capped
exponential backoff; it never stops the scheduler, and the database and NATS are reconnected
without a restart. SIGTERM or SIGINT stops scheduling, interrupts the pulls (their jobs go back
to the queue with progress kept), flushes events and stops the embedded NATS, within
``shutdown_timeout_s``.

Who calls it: ``llmctl serve`` (`controller.serve`) and ``llmctl demo`` (in-process). It must not
read the command line or the environment: everything arrives in the `Settings` it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import pathlib
import signal
import time
from types import TracebackType

import sqlalchemy as sa
import structlog
from alembic.util import CommandError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from controller import (
    control,
    crontab,
    embedded_nats,
    httpapi,
    httpauth,
    metrics,
    scheduled,
    settings,
    trigger,
)
from dwqueue import backoff, connector, natsauth, publisher
from runtimestate import database, errors, locks, snapshot, state

log = structlog.get_logger(__name__)


class StartError(RuntimeError):
    """The controller cannot start (lock held, NATS binary missing); exit status 1."""


class Controller:
    """Everything ``serve`` runs: ``async with Controller(config) as c: await c.wait()``."""

    def __init__(self, config: settings.Settings, *, migrate: bool = True) -> None:
        self.config = config
        self.migrate = migrate
        self.database_url = config.resolved_database_url
        self.nats_url = config.nats_url
        self.nats_auth = natsauth.NatsAuth()  # the embedded server's token, or the settings'
        self.http_port: int | None = None
        self.stopping = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._scheduler: AsyncIOScheduler | None = None
        self.state: state.State | None = None
        self.work: scheduled.Work | None = None
        self.publisher: publisher.Publisher | None = None

    async def __aenter__(self) -> Controller:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()
        started = time.monotonic()
        await self._stack.aclose()
        log.info("stopped", duration_s=round(time.monotonic() - started, 3))

    async def wait(self) -> None:
        """Run until SIGTERM or SIGINT (or until `stopping` is set)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            await self.stopping.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        self.stopping.set()

    async def _start(self) -> None:
        config = self.config
        access = self._access()  # before anything is written or started
        config.data_dir.mkdir(parents=True, exist_ok=True)
        try:  # a bad URL or password file: nothing to retry
            parsed = database.parse(self.database_url)
            engine = database.create_async_engine(self.database_url, pool_pre_ping=True)
        except database.DatabaseUrlError as exc:
            raise errors.ConfigurationError(str(exc)) from None
        if database.is_sqlite(parsed):
            self._lock_sqlite(pathlib.Path(str(parsed.database)))
        self._stack.push_async_callback(engine.dispose)
        meter = metrics.Metrics(stats=self._publisher_stats, replay=self._replay_declared)
        await self._start_http(meter, engine, access)  # /healthz answers while migrations wait
        if self.migrate:
            await self._migrate()
        if self.nats_url is None:
            self.nats_url = await self._embedded_nats()
        else:
            self.nats_auth = await _checked_nats(self.nats_url, config)
        events = publisher.Publisher(
            self.nats_url, prefix=config.subject_prefix, auth=self.nats_auth
        )
        self.publisher = events
        await events.start()
        self._stack.push_async_callback(self._close_publisher, events)
        sink = metrics.ObservingSink(events, meter)
        # The reaper's tick is this replica's heartbeat (`scheduled.Work`).
        beating = dataclasses.replace(config.state_settings(), heartbeat_s=config.reaper_interval_s)
        runtime = state.State(engine, sink=sink, settings=beating)
        self.state = runtime
        self._stack.push_async_callback(self._close_state, runtime)
        self.work = worker = scheduled.Work(
            runtime, engine, meter, min_interval_s=config.trigger_min_interval_s
        )
        await self._subscribe(events, control.Control(
            engine, worker.request, runtime.downloads.check, meter
        ))  # fmt: skip
        self._start_scheduler(worker, meter)
        log.info(
            "serving",
            database=database.redact(self.database_url),
            nats=natsauth.redact(self.nats_url),
            http=f"{settings.split_address(config.http_address)[0]}:{self.http_port}",
            schedule=config.cycle_cron or f"every {config.interval_s:g}s",
            owner=runtime.owner,
        )

    def _access(self) -> httpauth.Access:
        """Who may read the HTTP endpoints; `StartError` when they cannot be protected."""
        host = settings.split_address(self.config.http_address)[0]
        try:
            return httpauth.Access.from_settings(self.config, host)
        except httpauth.Refused as exc:
            raise StartError(str(exc)) from None

    def _lock_sqlite(self, path: pathlib.Path) -> None:
        lock = locks.InstanceLock(path.with_name(path.name + ".serve.lock"))
        if not lock.acquire():
            raise StartError(
                f"another llmctl serve (pid {lock.holder()}) already uses the SQLite database "
                f"{path}; SQLite supports one replica: stop it, or use Postgres for several"
            )
        self._stack.callback(lock.release)

    async def _migrate(self) -> None:
        """Apply migrations, retrying while the database is unreachable (until stopped)."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                with database.guarded():
                    await asyncio.to_thread(_migrate, self.database_url)
                return
            except (database.DatabaseUrlError, CommandError) as exc:
                raise errors.ConfigurationError(str(exc)) from exc
            except errors.DatabaseUnavailable as exc:
                attempt += 1
                delay = backoff.exponential(scheduled.FAILURE_BACKOFF, attempt)
                log.warning("database unreachable; retrying migrations", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)

    async def _embedded_nats(self) -> str:
        server = embedded_nats.EmbeddedNats(self.config.data_dir)
        try:
            await asyncio.to_thread(server.start)
        except embedded_nats.EmbeddedNatsError as exc:
            raise StartError(str(exc)) from exc
        self._stack.callback(server.stop)
        self.nats_auth = natsauth.NatsAuth(token=server.token)
        log.info("embedded NATS started", url=server.url)
        return server.url

    def _publisher_stats(self) -> publisher.Stats:
        return self.publisher.stats if self.publisher is not None else publisher.Stats()

    def _replay_declared(self) -> bool | None:
        return self.publisher.jetstream if self.publisher is not None else None

    def _snapshot(self) -> snapshot.Snapshot:
        return self.state.get() if self.state is not None else snapshot.EMPTY

    async def _start_http(
        self, meter: metrics.Metrics, engine: AsyncEngine, access: httpauth.Access
    ) -> None:
        async def ready() -> dict[str, str | None]:
            return {
                "database": await _database_problem(engine),
                "scheduler": None if self._scheduler_running() else "not running",
            }

        sources = httpapi.Sources(metrics=meter, ready=ready, snapshot=self._snapshot)
        host, port = settings.split_address(self.config.http_address)
        server = httpapi.Server(sources, host, port, access)
        try:
            await server.start()
        except OSError as exc:
            raise StartError(f"cannot listen on {self.config.http_address}: {exc}") from exc
        self.http_port = server.port
        self._stack.push_async_callback(server.stop)

    def _scheduler_running(self) -> bool:
        return (
            self._scheduler is not None and self._scheduler.running and not self.stopping.is_set()
        )

    async def _subscribe(self, events: publisher.Publisher, requests: control.Control) -> None:
        prefix = self.config.subject_prefix
        consuming = asyncio.get_running_loop().create_task(requests.run())
        self._stack.push_async_callback(control.stop, consuming)
        await events.subscribe(trigger.subject(prefix, trigger.TRIGGER), requests.on_trigger)
        await events.subscribe(trigger.subject(prefix, trigger.CANCEL), requests.on_cancel)

    def _start_scheduler(self, worker: scheduled.Work, meter: metrics.Metrics) -> None:
        config = self.config
        scheduler = AsyncIOScheduler(
            timezone=dt.UTC,
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": int(config.misfire_grace_s),
            },
        )
        cycle_trigger = (
            crontab.trigger(config.cycle_cron)
            if config.cycle_cron
            else IntervalTrigger(seconds=config.interval_s, timezone=dt.UTC)
        )
        scheduler.add_job(worker.backend_cycle, cycle_trigger, id="backend_cycle")
        every = {"timezone": dt.UTC}
        scheduler.add_job(
            worker.download_cycle,
            IntervalTrigger(seconds=config.download_interval_s, **every),
            id="download_cycle",
        )
        scheduler.add_job(
            worker.reap,
            IntervalTrigger(seconds=config.reaper_interval_s, **every),
            id="lease_reaper",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        requests = asyncio.get_running_loop().create_task(worker.serve_requests())
        worker.request()  # converge at once on start, whatever the schedule
        scheduler.start()
        self._scheduler = scheduler
        meter.scheduler_running.set(1)
        self._stack.push_async_callback(self._stop_scheduler, scheduler, requests, worker, meter)

    async def _stop_scheduler(
        self,
        scheduler: AsyncIOScheduler,
        requests: asyncio.Task[None],
        worker: scheduled.Work,
        meter: metrics.Metrics,
    ) -> None:
        scheduler.shutdown(wait=False)
        meter.scheduler_running.set(0)
        requests.cancel()
        await worker.cancel_running(timeout_s=min(2.0, self.config.shutdown_timeout_s / 4))

    async def _close_state(self, runtime: state.State) -> None:
        # Interrupting the pulls gives their jobs back to the queue; bounded, in case the
        # database is down and the release cannot be written (the lease then expires).
        try:
            await asyncio.wait_for(runtime.aclose(), self.config.shutdown_timeout_s / 2)
        except TimeoutError:
            log.warning("pulls did not stop in time; their leases will expire")

    async def _close_publisher(self, events: publisher.Publisher) -> None:
        await events.flush(timeout_s=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(events.close(), 2.0)


async def _checked_nats(url: str, config: settings.Settings) -> natsauth.NatsAuth:
    """The settings' NATS credentials, once the server at ``url`` accepted them. Raises
    StartError when a file cannot be read or the server refuses them (credentials, TLS); an
    unreachable server is fine (the publisher keeps trying)."""
    try:
        auth = config.nats_auth()
        await connector.probe(url, auth)
    except natsauth.NatsRefused as exc:
        raise StartError(str(exc)) from None
    except natsauth.NatsUnreachable as exc:
        log.warning("NATS unreachable at start; retrying in the background", reason=str(exc))
    return auth


def _migrate(url: str) -> None:
    """Upgrade the schema; replicas starting together take turns (`migrations.serialised`)."""
    migrations.upgrade(url)


async def _database_problem(engine: AsyncEngine, timeout_s: float = 2.0) -> str | None:
    """None when ``SELECT 1`` answers within ``timeout_s``, else what went wrong."""

    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    try:
        with database.guarded():
            await asyncio.wait_for(probe(), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except (errors.DatabaseUnavailable, sa.exc.DBAPIError) as exc:
        return database.describe(exc)
    return None


__all__ = ["Controller", "StartError"]
