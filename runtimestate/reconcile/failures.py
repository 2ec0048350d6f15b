"""A step of the backend cycle that failed: one log line, and the words for its outcome.

Called by the cycle's phases (`cycle`, `execution`, `recording`) where a step must not stop the
pass: a write, a queue operation, a prune. A database error is named by its driver's first line
(`runtimestate.database.describe`), never SQLAlchemy's text, which carries the statement and its
parameters; a queue refusal by its message; anything else is a bug of ours and keeps its
traceback. It must not raise, retry or decide what happens next: the caller does.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog

from dwqueue import queue
from runtimestate import database, errors

log = structlog.get_logger(__name__)


def logged(what: str, exc: Exception, **context: object) -> str:
    """Log one line for the step ``what`` that failed with ``exc``; return its detail."""
    if isinstance(exc, errors.DatabaseUnavailable | sa.exc.SQLAlchemyError | OSError):
        detail = f"database error: {database.describe(exc)}"
        log.warning(f"backend cycle: {what} failed", error=detail, **context)
    elif isinstance(exc, queue.QueueError):
        detail = str(exc)
        log.warning(f"backend cycle: {what} failed", error=detail, **context)
    else:
        detail = f"unexpected: {type(exc).__name__}: {exc}"
        log.exception(f"backend cycle: {what} failed", **context)
    return detail
