"""`POST /api/pull` of the Ollama emulator: progress lines from shared, resumable downloads.

The line sequence follows PROTOCOLS §1.4: `pulling manifest`; per blob `pulling <12 hex>` with
`digest`, `total`, `completed` (zero fields left out), ticking every `tick_interval` while
bytes arrive; `verifying sha256 digest`; `writing manifest`; `removing unused layers` when the
tag had an older manifest whose blobs nothing uses any more (a re-pull after the registry moved
the tag: the old copy stays listed and usable until `writing manifest`); `success`.
An unknown model gives the manifest line then
`{"error": "pull model manifest: file does not exist"}` (HTTP 200), or a 500 with `stream:false`.
Concurrent pulls attach to the same `downloads.BlobDownload`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from emulators import catalog, downloads, names, ollama_node, ollama_wire, server, streams

MANIFEST_MISSING = "pull model manifest: file does not exist"


async def handle(call: server.Call[ollama_node.OllamaNode]) -> web.StreamResponse:
    """Answer one pull request, streamed unless the body says `"stream": false`."""
    try:
        data = await ollama_wire.body(call.request)
        text = ollama_wire.model_field(data)
        name = ollama_wire.parse_name(text)
    except ollama_wire.BadRequest as exc:
        return exc.response
    if text.startswith("http://") and not data.get("insecure"):
        return ollama_wire.error(500, "insecure protocol http")
    events = pull_events(call.node, call.node.registry.get(name))
    if data.get("stream", True) is False:
        return await _collect(events)
    return await streams.LineStream(call.request, call.hits).pump(events)


async def _collect(events: AsyncGenerator[dict[str, Any], None]) -> web.Response:
    last: dict[str, Any] = {}
    async with contextlib.aclosing(events):
        async for event in events:
            if "error" in event:
                return ollama_wire.error(500, str(event["error"]))
            last = event
    return server.json_response(last)


async def pull_events(
    node: ollama_node.OllamaNode, spec: catalog.ModelSpec | None
) -> AsyncGenerator[dict[str, Any], None]:
    """Progress objects of one pull; ends after an `{"error": ...}` object on failure."""
    yield {"status": "pulling manifest"}
    if spec is None:
        yield {"error": MANIFEST_MISSING}
        return
    node.pulls[spec.name] += 1
    for blob in spec.blobs:
        async for event in _blob_events(node, blob):
            yield event
            if "error" in event:
                return
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    old = node.find(names.parse(spec.name))
    node.install(spec)
    if old is not None and old.spec.digest != spec.digest and node.drop_unused(old.spec):
        yield {"status": "removing unused layers"}
    yield {"status": "success"}


async def _blob_events(
    node: ollama_node.OllamaNode, blob: catalog.Blob
) -> AsyncGenerator[dict[str, Any], None]:
    status = f"pulling {blob.short}"
    if node.disk.has(blob.digest):
        yield _progress(status, blob, blob.size)
        return
    download = _attach(node, blob)
    try:
        while True:
            finished = download.finished.is_set()
            if finished and download.error is not None:
                yield {"error": download.error}
                return
            yield _progress(status, blob, download.completed)
            if finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(download.finished.wait(), node.tick_interval)
    finally:
        _detach(node, download)


def _progress(status: str, blob: catalog.Blob, completed: int) -> dict[str, Any]:
    line: dict[str, Any] = {"status": status, "digest": blob.digest, "total": blob.size}
    if completed:
        line["completed"] = completed
    return line


def _attach(node: ollama_node.OllamaNode, blob: catalog.Blob) -> downloads.BlobDownload:
    download = node.downloads.get(blob.digest)
    if download is None or download.finished.is_set():
        download = downloads.BlobDownload(node.disk, blob, node.pull_rate, node.tick_interval)
        node.downloads[blob.digest] = download
        node.download_starts[blob.digest] += 1
    download.attach()
    return download


def _detach(node: ollama_node.OllamaNode, download: downloads.BlobDownload) -> None:
    download.detach()
    digest = download.blob.digest
    if download.waiters <= 0 and node.downloads.get(digest) is download:
        del node.downloads[digest]
