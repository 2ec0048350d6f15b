"""The node agent's bearer token: where it comes from and how a request proves it has it.

`load(token_file, environ)` reads the token from a file (its first line, surrounding blanks
dropped) or else from ``LLMCTL_NODE_TOKEN``; never from the command line, where `ps` would show
it. `middleware(token)` is the aiohttp middleware `nodeagent.api` installs: every route but the
open ones (health) needs ``Authorization: Bearer <token>``, compared in constant time
(`hmac.compare_digest`); a missing or wrong token gets 401 with a JSON error. `is_loopback(host)`
is the check behind "no token only on loopback". The token is never logged, echoed or put in an
error message. Imports nothing of ours.
"""

from __future__ import annotations

import hmac
import ipaddress
import pathlib
from collections.abc import Awaitable, Callable, Collection, Mapping

from aiohttp import typedefs, web

ENV_VAR = "LLMCTL_NODE_TOKEN"
_SCHEME = "bearer "

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenError(ValueError):
    """A token file that cannot be used; the message names the file and the fix, never the token."""


def load(token_file: pathlib.Path | None, environ: Mapping[str, str]) -> str | None:
    """The token from `token_file` when given, else from ``LLMCTL_NODE_TOKEN``, else None.

    Raises TokenError for a file that is missing, unreadable or empty.
    """
    if token_file is None:
        return environ.get(ENV_VAR, "").strip() or None
    fix = "write the token on the file's first line, or set LLMCTL_NODE_TOKEN instead"
    try:
        text = token_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise TokenError(f"--token-file {str(token_file)!r}: {reason}: {fix}") from exc
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise TokenError(f"--token-file {str(token_file)!r} is empty: {fix}")
    return token


def is_loopback(host: str) -> bool:
    """Does binding `host` keep the agent reachable from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        return False


def granted(header: str | None, token: str) -> bool:
    """Does an Authorization header carry `token` as a bearer token? Constant time in the token."""
    if header is None or header[: len(_SCHEME)].lower() != _SCHEME:
        return False
    offered = header[len(_SCHEME) :].strip().encode()
    return hmac.compare_digest(offered, token.encode())


def middleware(token: str, open_paths: Collection[str]) -> typedefs.Middleware:
    """Refuse every request outside `open_paths` that does not carry `token` (401, JSON)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths or granted(request.headers.get("Authorization"), token):
            return await handler(request)
        return web.json_response(
            {
                "error": "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                "with the token the agent was started with",
                "class": "unauthorized",
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="llmctl-node"'},
        )

    return check
