"""Logging for the long-running controller: structlog, JSON in production, console on a terminal.

`configure` is called once by the composition root (`controller.serve`, `controller.demo`)
before anything logs; `configure_cli` before the body of every other command runs. Library
modules only call ``structlog.get_logger``; they never configure. Standard-library logging
(APScheduler, aiohttp, alembic) is routed through the same renderer so one process writes one
format. Must not log secrets: database URLs are redacted by callers.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

from controller import terminal

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure(
    fmt: Literal["json", "console"], level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib logging to write ``fmt`` lines to ``stream`` (stderr)."""
    out = stream or sys.stderr
    numeric = _LEVELS.get(level, logging.ERROR)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        # Tracebacks without the frames' local variables: a local can hold a key or a
        # password (the default shows them), and rendering them all takes long enough to
        # stall the event loop, e.g. on every failed heartbeat of a database outage.
        colors = terminal.styled(out)
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors,
            exception_formatter=structlog.dev.RichTracebackFormatter(
                show_locals=False, color_system="truecolor" if colors else None
            ),
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # APScheduler logs every run at INFO; its warnings (missed runs) are what matter.
    logging.getLogger("apscheduler").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))  # one line per request
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))


def configure_cli() -> None:
    """Logs of a CLI command go to standard error, so standard output stays parseable.

    Called just before a command's body runs (`controller.usage`), never for ``--help``: the
    import of structlog is a good part of a command's start-up."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=terminal.styled(sys.stderr)),
        ],
        # Look standard error up at every call: test runners and `serve` swap it.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
