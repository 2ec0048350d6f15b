"""The seam where virtual API keys plug into the gateway: the `Keys` protocol.

`application.build` takes a `Keys`; each request's bearer token (``Authorization: Bearer ...``,
None without one) and requested model go to `Keys.admit` before anything is resolved or
forwarded, which returns a `Grant` (the key, and how its requests are routed) or raises
`envelopes.Refusal` (401 without a valid key, 403 for a model the key may not use, 429 over a
limit). The grant's ``scope`` separates what one key may see of another's (the cache). The
key store itself (``llmctl key ...``) is another module's; with no key store configured the
gateway uses `Open`, which admits every request and ignores any token. The token is never
forwarded to a provider nor logged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from gateway import keys

OPEN_SCOPE = "open"


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """A request let through: by which key (None when the gateway is open to all)."""

    key: keys.Key | None = None

    @property
    def scope(self) -> str:
        """What this request shares with others: its key's (``key:<id>``), or everyone's."""
        return OPEN_SCOPE if self.key is None else f"key:{self.key.id}"


OPEN = Grant()


class Keys(Protocol):
    """Decides whether a request may proceed; raises `envelopes.Refusal` when it may not."""

    async def admit(self, token: str | None, model: str) -> Grant: ...

    def visible(self, token: str | None) -> Callable[[str], bool]:
        """Which models the token's key may see in ``GET /v1/models`` (a predicate over model
        names); raises `envelopes.Refusal` (401) when the token opens nothing."""
        ...


class Open:
    """No key store configured: every request is admitted, with or without a token."""

    async def admit(self, token: str | None, model: str) -> Grant:
        return OPEN

    def visible(self, token: str | None) -> Callable[[str], bool]:
        return _everything


def _everything(model: str) -> bool:
    return True


def bearer(request: web.Request) -> str | None:
    """The request's bearer token, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
