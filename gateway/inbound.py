"""One inference request as the gateway received it: its body read under a cap and checked.

`read` turns an aiohttp request for one of the `ENDPOINTS` into a `Call` (the endpoint, the
capability the resolver must find, the requested model, whether it streams, the body), or raises
`envelopes.Refusal` with a 4xx naming the problem: a body over the cap (413), not JSON or not an
object (400), a missing or empty ``model`` (400), a ``stream`` that is not a boolean (400).
Called by `application`; it never forwards anything and never logs the body (prompts are the
user's).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from gateway import envelopes
from runtimestate import echo

# The OpenAI route, the path under a provider's /v1 base and the capability it needs.
ENDPOINTS = {
    "/v1/chat/completions": ("chat/completions", "chat"),
    "/v1/completions": ("completions", "prompt"),
    "/v1/embeddings": ("embeddings", "embed"),
}
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """A checked request: where it goes (``path`` under the provider's /v1 base) and what."""

    path: str
    capability: str
    model: str
    stream: bool
    body: bytes
    document: dict[str, Any]
    asked_usage: bool = False  # the client's own ``stream_options.include_usage``
    policy: str | None = None  # the resolver policy asked for (`steering`); None: the default
    session: str | None = None  # the session key the sticky policy hashes

    def body_for(self, served: str) -> bytes:
        """The body to send to a provider serving the model as ``served``: the same bytes
        when nothing changes, else the document with ``model`` replaced and, for a stream,
        ``stream_options.include_usage`` set so that the provider counts the tokens. When
        only that option is added, and the client sent no ``stream_options``, it is added to
        the client's bytes rather than the document encoded again (a long prompt would
        cost a millisecond a request)."""
        asks = self.stream and not self.asked_usage
        if served == self.model and not asks:
            return self.body
        if served == self.model and "stream_options" not in self.document:
            trimmed = self.body.strip()
            if trimmed[:1] == b"{" and trimmed[-1:] == b"}":  # UTF-8: an object, `model` in it
                return trimmed[:-1] + _INCLUDE_USAGE
        document = {**self.document, "model": served}
        if asks:
            options = document.get("stream_options")
            document["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return json.dumps(document).encode()


_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}}'


async def read(request: web.Request, max_body_bytes: int) -> Call:
    """The checked `Call` for ``request``; raises `envelopes.Refusal` (4xx)."""
    path, capability = ENDPOINTS[request.path]
    raw = await _body(request, max_body_bytes)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise envelopes.Refusal(
            400, f"the request body is not valid JSON ({exc}); send a JSON object"
        ) from None
    if not isinstance(document, dict):
        raise envelopes.Refusal(400, "the request body must be a JSON object")
    model = document.get("model")
    if not isinstance(model, str) or not model.strip():
        raise envelopes.Refusal(
            400,
            "you must provide a model parameter: the name of a model the fleet serves "
            "(GET /v1/models lists them)",
            param="model",
        )
    stream = document.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise envelopes.Refusal(
            400, f"stream must be true or false, not {echo.quoted(stream)}", param="stream"
        )
    stream = stream and capability != "embed"
    options = document.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    return Call(path, capability, model, stream, raw, document, asked)


async def _body(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limit`` bytes (never read whole)."""
    too_big = envelopes.Refusal(
        413,
        f"the request body is over the gateway's limit of {limit} bytes "
        "(gateway_max_body_bytes); send a smaller request",
        code="request_too_large",
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
