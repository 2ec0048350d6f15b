"""llmctl's one error tree, and the HTTP-status classifier the adapters share.

Every error llmctl raises on purpose is drawn here. Callers decide what to do from the branch:

    LlmctlError                     base; carries `backend` (name or None) and `reason` (a code)
    ├── TemporaryError              retried with exponential backoff and jitter
    │   ├── BackendUnavailable      "unavailable": refused, reset mid-response, 429, 502, 503
    │   ├── BackendTimedOut         "timeout": connect/read/stall/total deadline, 408, 504
    │   ├── ServerError             "server_error": the backend answered 5xx or a stream error line
    │   ├── ProtocolError           "protocol": malformed, oversized or unexpected reply
    │   └── DatabaseUnavailable     "database_unavailable": the database is unreachable, restarting
    │                               or overloaded; raised only by `runtimestate.database`
    ├── TerminalError               recorded with its reason, never retried automatically
    │   ├── ModelNotFound           "model_not_found": 404 / "file does not exist" on a model
    │   ├── InvalidModelName        "invalid_model_name": the backend rejects the name itself
    │   ├── Unauthorized            "unauthorized": 401 / 403 (bad, missing or revoked key)
    │   ├── InsufficientDisk        "insufficient_disk": "no space left on device" during a pull
    │   └── RequestRejected         "rejected": any other 4xx (bad request, unknown route, ...)
    └── ConfigurationError          "configuration": bad settings, backend type or URL; raised
                                    at start (``controller.settings``) or when an adapter is
                                    built; fail fast, exit 2 on the command line

Outside the tree, two families the callers treat as answers rather than failures:

    LookupError
    └── ResolveError                `runtimestate.resolver.diagnosis`: no model fits a request
        ├── NoAvailableModels       (defined there: this module imports nothing of the
        └── NoSatisfactoryModel      resolver's); the gateway answers them as 404 / 422
    ValueError                      bad user input, exit 2 with the message:
    ├── InvalidRequest              `resolver.resolution`: a resolve request that cannot be valid
    ├── SpecError, ManifestError, StoreError, InvalidName   the desired state and its files
    ├── CredentialError             `runtimestate.credentials`
    └── DatabaseUrlError            `runtimestate.database`: a URL llmctl cannot use

Third-party exceptions are mapped at one boundary each with ``raise ... from exc`` and never
leak further: httpx, ollama, pydantic and json in `runtimestate.backends`; SQLAlchemy, the
drivers and OS errors meaning "the database is down" in `runtimestate.database`, which names
them by the driver's first line (never SQLAlchemy's text, which carries the SQL and its
parameters). An exception of any other type is a bug of ours: it is logged with its traceback
and treated as temporary (reason ``internal`` in a backend's conditions), never disguised as
one of these.

InsufficientDisk is terminal on purpose: retrying a pull with backoff only refills the disk
and re-fails; the download fails with reason ``insufficient_disk`` and is re-queued when an
operator frees space and retries (or the declaration changes), as DESIGN.md §6 says.

Who calls it: the adapters raise these; dwqueue workers and the backend cycle catch
`TemporaryError` (retry) versus `TerminalError` (record) and copy `reason` into status
conditions. This module must not import httpx, ollama or anything that does I/O, and messages
must never contain secrets (API keys, Authorization headers, URLs with credentials): callers pass
a short detail, which is truncated.
"""

from __future__ import annotations

import enum
from typing import ClassVar

_MAX_DETAIL = 300
_MAX_MESSAGE = 4000  # a configuration error lists every invalid setting, each value cut


class Reason(enum.StrEnum):
    """Short machine-readable codes, stable for status conditions and events."""

    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    PROTOCOL = "protocol"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_MODEL_NAME = "invalid_model_name"
    UNAUTHORIZED = "unauthorized"
    INSUFFICIENT_DISK = "insufficient_disk"
    REJECTED = "rejected"
    CONFIGURATION = "configuration"
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL = "internal"  # an exception of our own (a bug), in a backend's conditions


def _shorten(detail: str) -> str:
    detail = " ".join(detail.split())
    if len(detail) > _MAX_DETAIL:
        return detail[: _MAX_DETAIL - 1] + "…"
    return detail


class LlmctlError(Exception):
    """Base of every error llmctl raises on purpose.

    `detail` is a short human text (truncated, whitespace collapsed); `status_code` is the
    HTTP status when the backend answered one.
    """

    reason: ClassVar[Reason]
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        backend: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.detail = self._tidy(detail)
        self.backend = backend
        self.status_code = status_code
        super().__init__(self.detail)

    @staticmethod
    def _tidy(detail: str) -> str:
        return _shorten(detail)

    def __str__(self) -> str:
        prefix = f"{self.backend}: " if self.backend else ""
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{prefix}{self.detail}{status}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reason={self.reason.value!r}, backend={self.backend!r}, "
            f"status_code={self.status_code!r}, detail={self.detail!r})"
        )


class TemporaryError(LlmctlError):
    """A failure expected to clear by itself; retry with backoff."""

    reason: ClassVar[Reason] = Reason.UNAVAILABLE
    retryable: ClassVar[bool] = True


class BackendUnavailable(TemporaryError):
    reason: ClassVar[Reason] = Reason.UNAVAILABLE


class BackendTimedOut(TemporaryError):
    reason: ClassVar[Reason] = Reason.TIMEOUT


class ServerError(TemporaryError):
    reason: ClassVar[Reason] = Reason.SERVER_ERROR


class ProtocolError(TemporaryError):
    reason: ClassVar[Reason] = Reason.PROTOCOL


class DatabaseUnavailable(TemporaryError):
    """The database did not answer; `detail` is the driver's first line, never SQL."""

    reason: ClassVar[Reason] = Reason.DATABASE_UNAVAILABLE


class TerminalError(LlmctlError):
    """A failure retrying cannot fix; record it, retry only on user action or a new spec."""

    reason: ClassVar[Reason] = Reason.REJECTED


class ModelNotFound(TerminalError):
    reason: ClassVar[Reason] = Reason.MODEL_NOT_FOUND


class InvalidModelName(TerminalError):
    reason: ClassVar[Reason] = Reason.INVALID_MODEL_NAME


class Unauthorized(TerminalError):
    reason: ClassVar[Reason] = Reason.UNAUTHORIZED


class InsufficientDisk(TerminalError):
    reason: ClassVar[Reason] = Reason.INSUFFICIENT_DISK


class RequestRejected(TerminalError):
    reason: ClassVar[Reason] = Reason.REJECTED


class ConfigurationError(LlmctlError):
    """Invalid settings (unknown backend type, bad URL, bad timeouts, a bad settings file);
    fail at start. Its message may span lines (one per invalid setting) and is kept whole."""

    reason: ClassVar[Reason] = Reason.CONFIGURATION

    @staticmethod
    def _tidy(detail: str) -> str:
        detail = detail.strip()
        return detail if len(detail) <= _MAX_MESSAGE else detail[: _MAX_MESSAGE - 1] + "…"


def from_status(
    status_code: int,
    detail: str,
    *,
    backend: str | None,
    about_model: bool = False,
) -> LlmctlError:
    """Classify an HTTP error status (>= 400) into the tree. Pure; raises nothing.

    `about_model` says the request named a model (show, pull, delete, LoRA unload), so a 404
    means that model is missing rather than that the route or base URL is wrong.
    """
    cls: type[LlmctlError]
    if status_code in (401, 403):
        cls = Unauthorized
    elif status_code == 404 and about_model:
        cls = ModelNotFound
    elif status_code in (408, 504):
        cls = BackendTimedOut
    elif status_code in (429, 502, 503):
        cls = BackendUnavailable
    elif status_code >= 500:
        cls = ServerError
    elif status_code >= 400:
        cls = RequestRejected
    else:
        cls = ProtocolError
        detail = f"unexpected status {status_code}: {detail}"
    return cls(detail, backend=backend, status_code=status_code)
