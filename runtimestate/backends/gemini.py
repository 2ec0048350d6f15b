"""The Gemini adapter: `GET /v1beta/models` with `x-goog-api-key`, following pageToken.

`base_url` is the API host (``https://generativelanguage.googleapis.com``); if it already ends
with a version segment (``/v1beta``, ``/v1``) that segment is used as is. Context length is
`inputTokenLimit`; capabilities come from `supportedGenerationMethods`: ``generateContent`` ->
chat, prompt and stream (every generateContent model streams through streamGenerateContent,
even though the list rarely names it); ``embedContent``/``batchEmbedContents`` -> embed.

Who calls it: `backends.create`. Observe only. The key travels in the `x-goog-api-key` header,
never in the query string (where it would end up in URLs and error messages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from runtimestate import errors
from runtimestate.backends import base, endpoint, httpapi, transport
from runtimestate.desired import spec

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
PAGE_SIZE = "1000"
MAX_PAGES = 100  # a provider with more than 100,000 models is a bug or a loop
_GENERATE = frozenset({"generateContent", "streamGenerateContent"})
_EMBED = frozenset({"embedContent", "batchEmbedContents"})


class GeminiBackend(endpoint.Endpoint):
    """Adapter for the Gemini API with one key. Async context manager; `aclose()`."""

    capabilities: ClassVar[base.Capabilities] = base.Capabilities()

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        name: str | None = None,
        api_key: str | None = None,
        timeouts: base.Timeouts = base.Timeouts(),
        transport_: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = transport.DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        base_url = httpapi.validate_base_url(base_url)
        resolved = name or httpapi.default_name(base_url)
        versioned = base_url.rsplit("/", 1)[-1] in ("v1beta", "v1")
        self._models_path = "models" if versioned else "v1beta/models"
        api = httpapi.HttpApi(
            base_url,
            name=resolved,
            timeouts=timeouts,
            transport_=transport.capped(transport_, max_body_bytes),
            headers={"x-goog-api-key": api_key} if api_key else None,
        )
        super().__init__(resolved, api, timeouts, api_key)

    async def observe(self) -> base.Observation:
        """Every page of the model list. Read-only; raises `errors.LlmctlError`; all pages
        together are bounded by `Timeouts.total`."""
        models: list[base.ObservedModel] = []
        token = ""
        async with self._guard():
            for _ in range(MAX_PAGES):
                params = {"pageSize": PAGE_SIZE, **({"pageToken": token} if token else {})}
                page = await self._page(params)
                models.extend(_model(m) for m in _entries(page))
                next_token = page.get("nextPageToken") or ""
                if not isinstance(next_token, str) or (next_token and next_token == token):
                    raise transport.MalformedReply("nextPageToken is not a new string")
                if not next_token:
                    return base.Observation(models=tuple(models), healthy=True)
                token = next_token
        raise errors.ProtocolError(f"more than {MAX_PAGES} pages of models", backend=self.name)

    async def _page(self, params: dict[str, str]) -> Mapping[str, Any]:
        try:
            return await self._http.get_json(self._models_path, params=params)
        except errors.RequestRejected as exc:
            # Google answers a bad key with 400 INVALID_ARGUMENT "API key not valid".
            if exc.status_code == 400 and "api key" in exc.detail.lower():
                raise errors.Unauthorized(exc.detail, backend=self.name, status_code=400) from exc
            raise

    async def health(self) -> bool:
        """True when the listing answers; raises the mapped error otherwise."""
        await self.observe()
        return True

    async def version(self) -> str | None:
        """The Gemini API publishes no server version."""
        return None


def _entries(page: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    entries = page.get("models", [])
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise transport.MalformedReply("models is not a list")
    return [transport.expect_mapping(e, "model") for e in entries]


def _model(entry: Mapping[str, Any]) -> base.ObservedModel:
    full = transport.required(entry, "name", "a model")
    if not isinstance(full, str) or not full:
        raise transport.MalformedReply("model name is not a non-empty string")
    methods = entry.get("supportedGenerationMethods") or []
    if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
        raise transport.MalformedReply("supportedGenerationMethods is not a list of strings")
    raw = frozenset(methods)
    found: set[spec.Capability] = set()
    if raw & _GENERATE:
        found |= {spec.Capability.CHAT, spec.Capability.PROMPT, spec.Capability.STREAM}
    if raw & _EMBED:
        found.add(spec.Capability.EMBED)
    family = entry.get("baseModelId")
    return base.ObservedModel(
        name=full.removeprefix("models/"),
        model=full,
        digest=None,
        details=base.ModelDetails(family=family if isinstance(family, str) else None),
        context_length=transport.optional_int(entry.get("inputTokenLimit")),
        capabilities=frozenset(found),
        backend_capabilities=raw,
        loaded=False,
    )
