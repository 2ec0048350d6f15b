"""``llmctl serve``: run the controller until SIGTERM or SIGINT, and the options it shares.

`serve_command` loads the settings (the command line first, then ``LLMCTL_*`` variables, then
the ``--config`` file, then the defaults), configures the logs, tunes the garbage collector and
runs `controller.composition.Controller` until stopped. Exit codes: 0 when stopped, 1 when the
controller cannot start (`composition.StartError`: lock held, NATS binary missing, address in
use), 2 for bad settings, with the message saying what to fix.
`ConfigOpt` and `root_overrides` are shared with ``llmctl reconcile``, which reads the same
settings. It must not build anything itself: the composition root does.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Annotated, Any

import typer

from controller import composition, gctuning, logs, natsoptions, runner, settings
from runtimestate import errors


async def run(config: settings.Settings, *, migrate: bool = True) -> None:
    """Run the controller until SIGTERM/SIGINT. Raises `composition.StartError` or
    `errors.ConfigurationError`."""
    gctuning.tune()
    async with composition.Controller(config, migrate=migrate) as controller:
        await controller.wait()


def root_overrides(ctx: typer.Context) -> dict[str, Any]:
    """The global options given on the command line, as settings overrides."""
    root = ctx.find_root()
    overrides: dict[str, Any] = {}
    names = {"database_url": "database_url", "nats_url": "nats_url", "prefix": "subject_prefix"}
    given = set()
    for param in root.params:
        source = root.get_parameter_source(param)
        if source is not None and source.name == "COMMANDLINE":  # typer vendors its own click
            given.add(param)
    for param, field in names.items():
        if param in given:
            overrides[field] = root.params.get(param)
    return overrides | natsoptions.overrides(root.params, given)


ConfigOpt = Annotated[
    pathlib.Path | None,
    typer.Option(
        "--config",
        envvar=settings.CONFIG_ENV,
        help="YAML or TOML settings file (llmctl serve and reconcile read the same)",
        dir_okay=False,
    ),
]


def serve_command(
    ctx: typer.Context,
    config: ConfigOpt = None,
    no_migrate: Annotated[
        bool, typer.Option("--no-migrate", help="Do not apply database migrations at start")
    ] = False,
    http_address: Annotated[
        str | None,
        typer.Option(
            "--http-address",
            help=f"host:port of /metrics, /healthz, /readyz, /v1/state "
            f"(env LLMCTL_HTTP_ADDRESS; default {settings.DEFAULT_HTTP_ADDRESS})",
            show_default=False,
        ),
    ] = None,
    cycle_interval: Annotated[
        float | None,
        typer.Option("--cycle-interval", help="Seconds between backend cycles (default 30)"),
    ] = None,
    cycle_cron: Annotated[
        str | None,
        typer.Option("--cycle-cron", help="Cron expression (5 fields, or 6 with seconds first)"),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="json or console (default: console on a terminal)"),
    ] = None,
) -> None:
    """Run the controller: scheduled cycles, downloads, triggers and /metrics until stopped."""
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    try:
        loaded = settings.load(
            config,
            **root_overrides(ctx),
            http_address=http_address,
            cycle_interval_s=cycle_interval,
            cycle_cron=cycle_cron,
            log_format=log_format,
        )
    except errors.ConfigurationError as exc:
        env.fail(str(exc))
    logs.configure(loaded.resolved_log_format, loaded.log_level)
    try:
        asyncio.run(run(loaded, migrate=not no_migrate))
    except errors.ConfigurationError as exc:
        env.fail(str(exc))
    except composition.StartError as exc:
        env.fail(str(exc), 1)
    raise typer.Exit(0)


__all__ = ["ConfigOpt", "root_overrides", "run", "serve_command"]
