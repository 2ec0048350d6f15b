"""The revision a model has upstream now: an Ollama registry's manifest digest, a hub's commit.

`Upstream.latest` answers, for one model reference, what a pull of it would install today:

- ``ollama``: the sha256 of the registry's manifest for the tag (``GET /v2/<ns>/<model>/
  manifests/<tag>``, PROTOCOLS C.2): Ollama writes the manifest's bytes as served, so this is
  the digest `/api/tags` lists once the tag is pulled. Names follow
  `runtimestate.backends.registry.manifest_path` (a host in the name is asked over https).
- ``hub``: the ``sha`` of ``GET /api/models/<repo>/revision/main`` (PROTOCOLS A.2 step 1), the
  commit a node agent's snapshot of ``main`` would be. With a ``hub_token`` it is sent as a
  bearer token to the hub, and only there, so that private repos can be checked.

An answer it cannot get (unreachable, an error status, a malformed reply) raises
`UpstreamError` with a short reason; it never retries (the caller's rate limit decides when to
ask again). Called by `runtimestate.reconcile.upgradechecks` only; it holds no cache and never
logs request headers (nor shows the token in its repr).
"""

from __future__ import annotations

import hashlib
import re

import httpx

from runtimestate.backends import base, registry, transport

OLLAMA, HUB = "ollama", "hub"
DEFAULT_HUB_URL = "https://huggingface.co"
_MAX_BYTES = 1024 * 1024
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = re.compile(r"[\w.\-]+(/[\w.\-]+)?")


class UpstreamError(Exception):
    """The upstream revision could not be learnt; the message says why, in a few words."""


class Upstream:
    """Asks an Ollama registry and a Hugging Face hub; one per backend cycle."""

    def __init__(
        self,
        registry_url: str | None = registry.DEFAULT_URL,
        hub_url: str | None = DEFAULT_HUB_URL,
        *,
        timeouts: base.Timeouts = base.Timeouts(connect=3.0, read=5.0, total=10.0),
        http: httpx.AsyncBaseTransport | None = None,
        hub_token: str | None = None,
    ) -> None:
        self._urls = {OLLAMA: registry_url, HUB: hub_url}
        self._headers = {
            OLLAMA: {},
            HUB: {"authorization": f"Bearer {hub_token}"} if hub_token else {},
        }
        self._timeouts, self._http = timeouts, http
        self._clients: dict[str, httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return f"Upstream(registry_url={self._urls[OLLAMA]!r}, hub_url={self._urls[HUB]!r})"

    def asks(self, source: str) -> bool:
        """Whether ``source`` (``ollama`` or ``hub``) has a URL to ask."""
        return bool(self._urls.get(source))

    async def latest(self, source: str, reference: str) -> str:
        """The current revision of ``reference``: a bare-hex manifest digest (``ollama``) or
        a commit sha (``hub``). Raises `UpstreamError`."""
        if source == OLLAMA:
            return await self._digest(reference)
        if source == HUB:
            return await self._commit(reference)
        raise UpstreamError(f"unknown source {source!r}")

    async def _digest(self, reference: str) -> str:
        try:
            host, path = registry.manifest_path(reference)
        except ValueError as exc:
            raise UpstreamError(str(exc)) from None
        url = f"https://{host}{path}" if host is not None else path
        reply = await self._get(OLLAMA, url, {"accept": registry.MANIFEST})
        try:  # a manifest, not an error page: its digest is that of these bytes
            registry.manifest_size(transport.decode_json(reply))
        except transport.MalformedReply as exc:
            raise UpstreamError(f"malformed manifest: {exc}") from None
        return hashlib.sha256(reply).hexdigest()

    async def _commit(self, repo: str) -> str:
        if _REPO.fullmatch(repo) is None:
            raise UpstreamError(f"not a hub repo id: {repo!r}")
        reply = await self._get(HUB, f"/api/models/{repo}/revision/main", {})
        try:
            sha = transport.expect_mapping(transport.decode_json(reply), "revision").get("sha")
        except transport.MalformedReply as exc:
            raise UpstreamError(f"malformed revision: {exc}") from None
        if not isinstance(sha, str) or _SHA.fullmatch(sha) is None:
            raise UpstreamError("malformed revision: no commit sha")
        return sha

    async def _get(self, source: str, url: str, headers: dict[str, str]) -> bytes:
        try:
            reply = await self._client(source).get(url, headers=self._headers[source] | headers)
            if reply.status_code != 200:
                raise UpstreamError(f"HTTP {reply.status_code}{_hint(source, reply.status_code)}")
            return reply.content
        except (httpx.HTTPError, transport.BodyTooLarge) as exc:
            raise UpstreamError(type(exc).__name__) from None

    def _client(self, source: str) -> httpx.AsyncClient:
        client = self._clients.get(source)
        if client is None:
            url = self._urls.get(source)
            if not url:
                raise UpstreamError(f"no {source} URL configured")
            client = transport.build_client(
                url.rstrip("/"), timeouts=self._timeouts,
                transport=transport.capped(self._http, _MAX_BYTES),
            )  # fmt: skip
            self._clients[source] = client
        return client

    async def aclose(self) -> None:
        """Close the connections opened; a later question opens new ones."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _hint(source: str, status: int) -> str:
    """What a hub's refusal most likely means: a private repo (401 without a token, 404 with
    one that has no access), and the setting that fixes it."""
    if source == HUB and status == 401:
        return " (a private repo? give the controller a hub token: hub_token_file)"
    return ""
