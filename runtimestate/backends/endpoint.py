"""What every HTTP adapter but Ollama's shares: its name, its HTTP API, its key, its guard.

`Endpoint` holds one backend's `httpapi.HttpApi`, its `base.Timeouts` and the key it sends (only
to mask it out of error text), is an async context manager, and wraps each call in
`failures.guard` under the call's deadline. `BearerEndpoint` builds it the OpenAI way (a
bearer key in the Authorization header, a capped transport): the OpenAI-compatible, vLLM and
node-agent adapters are such endpoints; Gemini's builds its own API (a key header) and hands it
to `Endpoint`.

Who calls it: the adapter modules, as their base class. It must not observe, pull or decide
anything; that is each adapter's.
"""

from __future__ import annotations

import contextlib
from typing import Self

import httpx

from runtimestate.backends import base, failures, httpapi, transport


class Endpoint:
    """One backend's HTTP API with its deadline guard. Async context manager; `aclose()`."""

    def __init__(
        self, name: str, http: httpapi.HttpApi, timeouts: base.Timeouts, secret: str | None
    ) -> None:
        self.name = name
        self._http = http
        self._timeouts = timeouts
        self._secret = secret

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _guard(
        self, *, about_model: bool = False, total: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Map the block's failures to `errors` under `total` seconds (default: the call's
        `Timeouts.total`), masking the key out of their text."""
        return failures.guard(
            self.name,
            total=self._timeouts.total if total is None else total,
            about_model=about_model,
            secret=self._secret,
        )


class BearerEndpoint(Endpoint):
    """An endpoint that sends its key as ``Authorization: Bearer``, with capped replies."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        timeouts: base.Timeouts = base.Timeouts(),
        transport_: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = transport.DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        base_url = httpapi.validate_base_url(base_url)
        resolved = name or httpapi.default_name(base_url)
        api = httpapi.HttpApi(
            base_url,
            name=resolved,
            timeouts=timeouts,
            transport_=transport.capped(transport_, max_body_bytes),
            headers=bearer(api_key),
        )
        super().__init__(resolved, api, timeouts, api_key)


def bearer(api_key: str | None) -> dict[str, str] | None:
    """The Authorization header for ``api_key``, or None without one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else None
