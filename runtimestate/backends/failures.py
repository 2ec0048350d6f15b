"""Where third-party failures become `runtimestate.errors`: one mapping, one deadline guard.

`guard()` wraps one adapter call: it enforces the call's total deadline (so a node that drips
bytes slower than the read timeout still cannot hold a caller longer than `Timeouts.total`)
and maps every transport and timeout failure, and every malformed reply, with ``raise ... from
exc``. A malformed reply is what the reply checks say it is (`transport.MalformedReply`) or what
a third-party parser of the wire rejects (json, the ollama client's pydantic models); a
ValueError, TypeError, KeyError or AttributeError of our own parsing is a bug, not a reply, and
is never mapped: disguised as ``protocol`` it would mark a node Degraded and hide its traceback.
`check_status()` turns an HTTP error status into the tree using the error-envelope parser.
Given the key the adapter sends, `guard()` masks it out of every error it lets through, so
text a provider echoed never carries the key further (`runtimestate.backends.redaction`).

Who calls it: the adapter modules. It must not swallow anything: exceptions it does not know
propagate unchanged so the cycle logs them with a traceback and treats them as temporary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pydantic

from runtimestate import errors
from runtimestate.backends import redaction, transport

# What the boundary maps: failures of the transport, and replies that are not what the wire
# contract says. Never ValueError, TypeError or KeyError as such: those are our own bugs.
MAPPED: tuple[type[BaseException], ...] = (
    OSError,  # includes builtin ConnectionError (the ollama client's wrap) and TimeoutError
    httpx.HTTPError,
    transport.BodyTooLarge,
    transport.MalformedReply,
    json.JSONDecodeError,  # a third-party parser (the ollama client) read a reply
    UnicodeDecodeError,
    pydantic.ValidationError,  # the ollama client's models of its replies; we build none
)

# Maps one exception; None when it is not a failure of the call (a bug): it then propagates.
Translator = Callable[[BaseException, str, bool], errors.LlmctlError | None]


def translate(exc: BaseException, backend: str, about_model: bool = False) -> errors.LlmctlError:
    """Map one exception from httpx, the socket layer or a reply's checks. Pure; raises
    nothing."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return errors.BackendTimedOut(f"timed out: {_name(exc)}", backend=backend)
    if isinstance(exc, transport.BodyTooLarge):
        return errors.ProtocolError(str(exc), backend=backend)
    if isinstance(exc, httpx.HTTPStatusError):
        return check_status_error(exc.response, backend, about_model)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return errors.ConfigurationError(f"bad backend URL: {_name(exc)}", backend=backend)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.NetworkError | ConnectionError | OSError):
        return errors.BackendUnavailable(f"connection failed: {_describe(exc)}", backend=backend)
    if isinstance(exc, pydantic.ValidationError):
        return errors.ProtocolError(
            f"unexpected reply shape: {exc.error_count()} errors", backend=backend
        )
    if isinstance(exc, transport.MalformedReply):
        return errors.ProtocolError(f"malformed reply: {exc}", backend=backend)
    if isinstance(exc, httpx.HTTPError | json.JSONDecodeError | UnicodeDecodeError):
        return errors.ProtocolError(f"malformed reply: {_describe(exc)}", backend=backend)
    return errors.ProtocolError(f"unexpected failure: {_name(exc)}", backend=backend)


def check_status_error(
    response: httpx.Response, backend: str, about_model: bool = False
) -> errors.LlmctlError:
    """The tree's error for an HTTP error response (the body must already be read).

    A 404 not about a model means the route or the base URL is wrong, so its message names
    the URL requested (``404 Not Found from http://host:8000/v1/v1/models``); never a header.
    """
    message = transport.error_message(response.content) or response.reason_phrase
    if response.status_code == 404 and not about_model:
        status = "" if message.startswith("404") else "404 "  # Go servers: 404 page not found
        message = f"{status}{message} from {response.request.url}"
    return errors.from_status(
        response.status_code, message, backend=backend, about_model=about_model
    )


def check_status(response: httpx.Response, backend: str, *, about_model: bool = False) -> None:
    """Raise the mapped error when `response` is not 2xx. Reads nothing new."""
    if not response.is_success:
        raise check_status_error(response, backend, about_model)


@contextlib.asynccontextmanager
async def guard(
    backend: str,
    *,
    total: float | None,
    about_model: bool = False,
    translator: Translator = translate,
    mapped: tuple[type[BaseException], ...] = MAPPED,
    secret: str | None = None,
) -> AsyncIterator[None]:
    """Run the block under a `total`-second deadline (None: no deadline) and map failures.

    Raises only `errors.LlmctlError` for anything in `mapped` (default `MAPPED`; an adapter
    adds its client's exception types and passes its own `translator`) or a missed deadline;
    other exceptions (bugs, cancellation), and those the translator declines (returns None),
    pass through untouched. ``secret`` is the key the
    adapter sends: it and its long fragments are masked out of the error's text
    (`redaction.mask`), since providers echo the key they were sent.
    """
    try:
        async with asyncio.timeout(total):
            yield
    except BaseException as exc:
        error = _mapped(exc, backend, total, about_model, translator, mapped)
        if error is None:
            raise
        masked = redacted(error, secret)
        if masked is not error:
            # The original error and its causes still hold the key: drop the chain.
            raise masked from None
        if error is exc:
            raise
        raise error from exc


def _mapped(
    exc: BaseException,
    backend: str,
    total: float | None,
    about_model: bool,
    translator: Translator,
    mapped: tuple[type[BaseException], ...],
) -> errors.LlmctlError | None:
    """The error `guard` raises for ``exc``, or None to let ``exc`` pass untouched."""
    if isinstance(exc, errors.LlmctlError):
        return exc
    if isinstance(exc, ExceptionGroup):  # from a TaskGroup of concurrent requests
        leaf = first_leaf(exc)
        if isinstance(leaf, errors.LlmctlError):
            return leaf
        if isinstance(leaf, mapped):
            return translator(leaf, backend, about_model)
        return None
    if isinstance(exc, TimeoutError):  # the deadline (an OSError too: checked first)
        return errors.BackendTimedOut(
            f"no complete reply within {total:g}s" if total else "timed out", backend=backend
        )
    if isinstance(exc, mapped):
        return translator(exc, backend, about_model)
    return None


def redacted(error: errors.LlmctlError, secret: str | None) -> errors.LlmctlError:
    """``error`` with ``secret`` masked out of its detail; the same object when it held none."""
    detail = redaction.mask(error.detail, secret)
    if detail == error.detail:
        return error
    return type(error)(detail, backend=error.backend, status_code=error.status_code)


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first non-group exception inside a (possibly nested) exception group."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    # httpx messages hold the URL at most (never headers); the URL of a backend is not secret
    # by itself, and credentials in it are refused when the adapter is built.
    text = str(exc)
    return f"{_name(exc)}: {text}" if text else _name(exc)
