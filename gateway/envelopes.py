"""OpenAI's error envelope, as the gateway answers a refused or failed request.

A JSON body ``{"error":{"message","type","param","code"}}`` with the HTTP status (PROTOCOLS
D.1), and, once a stream has started, the error event ``data: {"error":...}`` followed by
``data: [DONE]`` (D.4), which the official client raises as ``openai.APIError``. `Refusal` is
the exception the request path raises to answer with an envelope. Used by every gateway module;
pure values, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

INVALID = "invalid_request_error"
NOT_FOUND = "not_found_error"
SERVER = "server_error"
UNAVAILABLE = "service_unavailable"


def body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    """The envelope's JSON text."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def stream_error(message: str) -> bytes:
    """The SSE event that ends a stream which failed after its first byte, then ``[DONE]``."""
    return b"data: " + body(message, SERVER) + b"\n\ndata: [DONE]\n\n"


class Refusal(Exception):
    """A request answered with an OpenAI error envelope (nothing, or nothing more, forwarded)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = INVALID,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        """The JSON response for this refusal."""
        return web.Response(
            status=self.status,
            body=body(self.message, self.kind, self.code, self.param),
            content_type="application/json",
            headers=self.headers,
        )
