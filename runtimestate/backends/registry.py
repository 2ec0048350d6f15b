"""Model sizes before pulling: the Ollama registry's manifests (issue 16, PROTOCOLS C.2).

`Sizes.lookup` answers the size in bytes of Ollama model references (Σ `layers[].size` +
`config.size` of `GET /v2/<namespace>/<model>/manifests/<tag>`), for the backend cycle's
admission lookup (`runtimestate.reconcile.capacity`). The registry is asked once per reference
per TTL, not per cycle per backend: answers are cached (`ttl_s`), failures too for a shorter
while (`failure_ttl_s`), at most `concurrency` requests run at once, at most `per_lookup` new
references are fetched per call (the rest wait for a later cycle, unknown meanwhile) and a call
waits `deadline_s` at most (what has not answered by then is a failure). A
reference it cannot size (registry unreachable, 404, a malformed manifest) is left out: size
unknown, and the pull goes ahead unadmitted, as before.

Names with a host (``example.com/ns/model:tag``) are asked of ``https://<host>``; the others of
the configured registry URL (default the public one; tests point it at the emulator, which
serves the route). Reads `clock.monotonic` only; never logs request headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from runtimestate import clock as clocks
from runtimestate.backends import answers, base, transport

DEFAULT_URL = "https://registry.ollama.ai"
_HOST = "registry.ollama.ai"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_MAX_MANIFEST_BYTES = 1024 * 1024


def manifest_path(name: str) -> tuple[str | None, str]:
    """The registry host (None: the configured one) and manifest path of an Ollama name:
    ``qwen2:0.5b`` -> (None, ``/v2/library/qwen2/manifests/0.5b``). Raises ValueError for a
    name with more than three path parts or an empty one."""
    path, tag = name, "latest"
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        path, tag = name[:colon], name[colon + 1 :]
    parts = path.split("/")
    if len(parts) > 3 or not all(parts) or not tag:
        raise ValueError(f"not an Ollama model name: {name!r}")
    host = parts[0] if len(parts) == 3 and parts[0].lower() != _HOST else None
    namespace, model = (["library", *parts] if len(parts) == 1 else parts[-2:])[-2:]
    return host, f"/v2/{namespace}/{model}/manifests/{tag}"


def manifest_size(manifest: Any) -> int:
    """Σ `layers[].size` + `config.size`, as Ollama's `Manifest.Size()`. Raises
    `transport.MalformedReply` for anything else than a manifest."""
    body = transport.expect_mapping(manifest, "manifest")
    layers = transport.required(body, "layers", "manifest")
    config = body.get("config") or {}
    if not isinstance(layers, list) or not isinstance(config, dict):
        raise transport.MalformedReply("manifest: layers must be a list, config an object")
    sizes = [
        transport.optional_int(transport.expect_mapping(layer, "layer").get("size"))
        for layer in layers
    ]
    if any(size is None or size < 0 for size in sizes):
        raise transport.MalformedReply("manifest: a layer without a size")
    return sum(size or 0 for size in sizes) + (transport.optional_int(config.get("size")) or 0)


class Sizes:
    """Cached, rate-limited model sizes from Ollama registries; one per backend cycle."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        ttl_s: float = 3600.0,
        failure_ttl_s: float = 60.0,
        concurrency: int = 4,
        per_lookup: int = 32,
        deadline_s: float = 5.0,
        timeouts: base.Timeouts = base.Timeouts(connect=3.0, read=5.0, total=10.0),
        http: httpx.AsyncBaseTransport | None = None,
        clock: clocks.Clock = clocks.SYSTEM,
    ) -> None:
        self._url = url.rstrip("/")
        self._answers: answers.Answers[str] = answers.Answers(
            ttl_s=ttl_s, failure_ttl_s=failure_ttl_s, per_lookup=per_lookup,
            deadline_s=deadline_s, clock=clock,
        )  # fmt: skip
        self._semaphore = asyncio.Semaphore(concurrency)
        self._timeouts, self._http = timeouts, http
        self._client: httpx.AsyncClient | None = None  # built at the first fetch
        self.fetches = 0  # manifests requested since start (tests and logs)

    async def lookup(self, models: Iterable[str]) -> Mapping[str, int]:
        """The known sizes of ``models`` by name; those it cannot size are left out."""
        return await self._answers.lookup(sorted(set(models)), self._fetch)

    async def _fetch(self, model: str) -> int | None:
        try:
            host, path = manifest_path(model)
        except ValueError:
            return None
        url = f"https://{host}{path}" if host is not None else path
        async with self._semaphore:
            self.fetches += 1
            try:
                reply = await self._connected().get(url)
                if reply.status_code != 200:
                    return None
                return manifest_size(transport.decode_json(reply.content))
            except (httpx.HTTPError, transport.MalformedReply, transport.BodyTooLarge):
                return None

    def _connected(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = transport.build_client(
                self._url, timeouts=self._timeouts, headers={"accept": MANIFEST},
                transport=transport.capped(self._http, _MAX_MANIFEST_BYTES),
            )  # fmt: skip
        return self._client

    async def aclose(self) -> None:
        """Close the connections, if any were opened; a later lookup opens new ones."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
