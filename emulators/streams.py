"""Streamed responses (NDJSON for Ollama, SSE for vLLM) with stream faults applied.

`LineStream` prepares an aiohttp `StreamResponse` and writes one line (or SSE frame) at a time. It
applies the `reset`, `malformed`, `oversized`, `stream_error` and `truncate` faults once
`after_lines` lines have been sent; the route gives the error event a `stream_error` sends. A reset
aborts the transport and raises `StreamAborted`; a client that went away raises
`ConnectionResetError` from `send`, so handlers release what they hold in `finally`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from aiohttp import web

from emulators import faults

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
STREAM_ERROR = "llmctl emulator: injected error in the middle of the stream"


@dataclasses.dataclass(frozen=True)
class Raw:
    """An event `LineStream.pump` sends as is, not as JSON (SSE's `[DONE]`)."""

    text: str


class StreamAborted(ConnectionResetError):
    """The emulator reset the connection on purpose (a `reset` fault)."""


class LineStream:
    """One streamed HTTP response; call `start`, then `send` / `send_json` per line."""

    def __init__(
        self,
        request: web.Request,
        hits: list[faults.Fault],
        content_type: str = NDJSON,
        error: Sequence[Any] = ({"error": STREAM_ERROR},),
    ) -> None:
        self.request = request
        self.error = error  # the events a `stream_error` fault sends (JSON objects or `Raw`)
        self.response = web.StreamResponse(status=200)
        self.response.content_type = content_type
        self.sent = 0
        self._reset = faults.find(hits, faults.FaultKind.RESET)
        self._malformed = faults.find(hits, faults.FaultKind.MALFORMED)
        self._oversized = faults.find(hits, faults.FaultKind.OVERSIZED)
        self._stream_error = faults.find(hits, faults.FaultKind.STREAM_ERROR)
        self._truncate = faults.find(hits, faults.FaultKind.TRUNCATE)
        self._sse = content_type == SSE

    async def start(self) -> web.StreamResponse:
        """Send the status line and headers (200)."""
        await self.response.prepare(self.request)
        return self.response

    async def pump(self, events: AsyncGenerator[Any, None]) -> web.StreamResponse:
        """Start, send every event as JSON, and close `events` even when the client leaves.

        A client disconnect or a `reset` fault ends the stream quietly; the generator's
        `finally` blocks run either way. A `stream_error` fault sends `error` instead of the
        rest; a `truncate` fault just stops.
        """
        async with contextlib.aclosing(events):
            with contextlib.suppress(ConnectionResetError):
                if self._due(self._reset):
                    self.abort()  # before the status line: the client gets no byte at all
                await self.start()
                async for event in events:
                    if self._due(self._truncate):
                        break
                    if self._due(self._stream_error):
                        for line in self.error:
                            await self._send_event(line)
                        break
                    await self._send_event(event)
        return self.response

    async def _send_event(self, event: Any) -> None:
        if isinstance(event, Raw):
            await self.send(event.text)
        else:
            await self.send_json(event)

    async def send_json(self, obj: Any) -> None:
        """Send one JSON object as a line (NDJSON) or a `data:` frame (SSE)."""
        await self.send(json.dumps(obj, separators=(",", ":")))

    async def send(self, text: str) -> None:
        """Send one line; applies armed faults. Raises ConnectionResetError when gone."""
        if self._due(self._reset):
            self.abort()
        data = text.encode()
        if self._due(self._malformed):
            data = faults.malformed(data)
            self._malformed = None
        line = self._frame(data)
        if self._due(self._oversized):
            assert self._oversized is not None
            line = faults.oversized(line, self._oversized.size)
            self._oversized = None
        await self.response.write(line)
        self.sent += 1

    def abort(self) -> None:
        """Drop the connection without a proper end; raises StreamAborted."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        raise StreamAborted("connection reset by emulator fault")

    def _frame(self, data: bytes) -> bytes:
        return b"data: " + data + b"\n\n" if self._sse else data + b"\n"

    def _due(self, fault: faults.Fault | None) -> bool:
        return fault is not None and self.sent >= fault.after_lines
