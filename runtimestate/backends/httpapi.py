"""`HttpApi`: one capped, timed httpx client per backend, with checked request helpers.

The vLLM, OpenAI-compatible and Gemini adapters talk through this (the Ollama adapter uses it
for `/api/version`). Every helper returns only on a 2xx reply and otherwise raises the mapped
`errors` class; deadlines and exception mapping are the caller's `failures.guard`.

Who calls it: adapter modules. It must not hold more than one client per backend, and must
never include headers (API keys) in anything it raises.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from runtimestate import errors
from runtimestate.backends import base, failures, transport
from runtimestate.desired import spec


def validate_base_url(base_url: str) -> str:
    """`base_url` checked by the spec's rules (`spec.base_url`), without a trailing slash.

    Each adapter calls this once, when it is built. Raises `errors.ConfigurationError` (which
    never shows a user, password or query) for a URL that is not valid.
    """
    try:
        return spec.base_url(base_url)
    except spec.SpecError as exc:
        raise errors.ConfigurationError(f"base_url: {exc.message}") from None


def default_name(base_url: str) -> str:
    """A readable backend name for errors when the caller gave none: host, port and path."""
    parts = urllib.parse.urlsplit(base_url)
    return f"{parts.netloc}{parts.path}".rstrip("/")


class HttpApi:
    """Requests against one backend. Paths are relative to the base URL (prefix kept), which
    the adapter has checked with `validate_base_url`."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        timeouts: base.Timeouts,
        transport_: httpx.AsyncBaseTransport,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.client = transport.build_client(
            base_url,
            timeouts=timeouts,
            transport=transport_,
            headers=headers,
        )

    async def get(
        self, path: str, *, params: Mapping[str, str] | None = None, about_model: bool = False
    ) -> httpx.Response:
        response = await self.client.get(path.lstrip("/"), params=params)
        failures.check_status(response, self.name, about_model=about_model)
        return response

    async def get_json(
        self, path: str, *, params: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        response = await self.get(path, params=params)
        return transport.expect_mapping(transport.decode_json(response.content), path)

    async def post_json(
        self, path: str, body: Mapping[str, Any], *, about_model: bool = False
    ) -> httpx.Response:
        response = await self.client.post(path.lstrip("/"), json=dict(body))
        failures.check_status(response, self.name, about_model=about_model)
        return response

    async def answers(self, path: str) -> bool:
        """True when ``GET path`` answers 2xx, False on any other status (a health check);
        httpx errors when the server cannot be reached (the caller's guard maps them)."""
        response = await self.client.get(path.lstrip("/"))
        await response.aread()
        return response.is_success

    async def version(self, path: str) -> str:
        """The ``version`` string of the JSON object at ``path`` (Ollama's and vLLM's version
        endpoints); `transport.MalformedReply` when it is not a string."""
        value = (await self.get_json(path)).get("version")
        if not isinstance(value, str):
            raise transport.MalformedReply("version is not a string")
        return value

    async def aclose(self) -> None:
        await self.client.aclose()
