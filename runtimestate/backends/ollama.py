"""The Ollama adapter: observe, pull, delete through the official `ollama.AsyncClient`.

Observation is `/api/tags` and `/api/ps` concurrently (plus `/api/version` when the remembered
version is older than `version_ttl`), then `/api/show` only for digests the fleet-wide
`ShowCache` has not seen. `/api/version` and `GET /` go through httpx (the client
has no method for them) over the same capped connection pool. Pulls stream NDJSON progress; if
no line arrives within `Timeouts.stall` seconds the pull fails with `BackendTimedOut`.

A steady node answers `/api/tags` and `/api/ps` with the same bytes cycle after cycle, and
parsing 50 listed models with the client's pydantic types costs about a millisecond. So the
two listings are sent with the client's own request method (`_request_raw`: the client's
headers, timeouts and error mapping, without its parse) and read by `ollamareplies` (into the
client's `ListResponse`/`ProcessResponse`, as `list()`/`ps()` do), but only when the body
changed: when both bodies (compared by a BLAKE2 digest; in `/api/ps` an expiry centuries
ahead, a model kept forever, counts as unchanged) and the version are what they were,
`observe` returns the previous `Observation` object itself, which lets the backend cycle
reuse everything it derived from it. The listings' URLs are absolute, built once from the
client's base URL (httpx re-parses a relative one on every request), and no client keeps
cookies (`transport.NoCookies`). Both private names (`_request_raw`, the client's `_client`)
are why pyproject.toml caps the client below 0.7; the contract tests run the real client.

Every exception of the client (`ResponseError`, builtin `ConnectionError`, raw httpx errors,
pydantic `ValidationError`, `json.JSONDecodeError`, and the `TypeError`/`AttributeError` it
raises inside its own code on a reply that is not a JSON object) is mapped here to
`runtimestate.errors`; the same types raised in our code are bugs and propagate.
Bodies are capped by `transport.CappedTransport`, which the client uses as its transport.

Who calls it: `backends.create` builds it; the backend cycle observes, download workers pull,
the pruner deletes. It must not decide anything (what to pull or prune is the planner's), and
must not canonicalise names: it reports Ollama's display names as they are.
Note: the official client adds ``Authorization: Bearer $OLLAMA_API_KEY`` when that variable is
set and no `api_key` is given; pass `api_key` explicitly to control what a node receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import pathlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import ClassVar

import httpx
import ollama

from runtimestate import errors
from runtimestate.backends import (
    base,
    failures,
    httpapi,
    ollamareplies,
    redaction,
    showcache,
    transport,
)

_SHOW_CONCURRENCY = 4
DEFAULT_VERSION_TTL = 300.0
_SUCCESS = "success"


@dataclasses.dataclass(frozen=True, slots=True)
class _Seen:
    """The last complete observation and what it was made of (body digests, version)."""

    tags: bytes
    running: bytes
    version: str | None
    observation: base.Observation


class OllamaBackend:
    """Adapter for one Ollama node. Use as an async context manager or call `aclose()`."""

    capabilities: ClassVar[base.Capabilities] = base.Capabilities(
        can_pull=True, can_delete=True, can_preload=True
    )

    def __init__(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        timeouts: base.Timeouts = base.Timeouts(),
        transport_: httpx.AsyncBaseTransport | None = None,
        show_cache: showcache.ShowCache | None = None,
        max_body_bytes: int = transport.DEFAULT_MAX_BODY_BYTES,
        version_ttl: float = DEFAULT_VERSION_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        base_url = httpapi.validate_base_url(base_url)
        self.name = name or httpapi.default_name(base_url)
        self._timeouts = timeouts
        self._secret = api_key
        self._clock = clock
        self._version_ttl = version_ttl
        self._version: str | None = None
        self._version_at: float | None = None
        self._seen: _Seen | None = None
        self._cache = show_cache if show_cache is not None else showcache.ShowCache()
        shared = transport.capped(transport_, max_body_bytes)
        headers = dict(transport.IDENTITY_ENCODING)
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpapi.HttpApi(
            base_url, name=self.name, timeouts=timeouts, transport_=shared, headers=headers
        )
        self._client = ollama.AsyncClient(
            host=base_url,
            timeout=transport.httpx_timeout(timeouts),
            transport=shared,
            headers=headers,
            follow_redirects=False,
            cookies=transport.NoCookies(),
        )
        # The listings' absolute URLs, built once from the base URL the client settled on
        # (it adds Ollama's default port to a URL without one): httpx re-parses the URL of a
        # relative path on every request, a fifth of the client's CPU per request.
        root = str(self._client._client.base_url).rstrip("/")
        self._tags_url = httpx.URL(f"{root}/api/tags")
        self._ps_url = httpx.URL(f"{root}/api/ps")

    async def __aenter__(self) -> OllamaBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared connection pool. Idempotent."""
        await self._client.close()  # type: ignore[no-untyped-call]  # untyped upstream
        await self._http.aclose()

    def _guard(
        self, *, about_model: bool = False, total: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return failures.guard(
            self.name,
            total=self._timeouts.total if total is None else total,
            about_model=about_model,
            translator=translate,
            mapped=MAPPED,
            secret=self._secret,
        )

    async def observe(self) -> base.Observation:
        """List models with details, capabilities, context length and loaded state.

        Read-only. Raises `errors.LlmctlError`; the whole call is bounded by `total`.
        A failing `/api/version` only leaves `version` None. The version is re-read at most
        every `version_ttl` seconds: it changes only when the node is upgraded.
        """
        async with self._guard():
            async with asyncio.TaskGroup() as group:
                tags = group.create_task(self._listing(self._tags_url))
                asked = None
                if self._version_due():
                    asked = group.create_task(self._refresh_version())
                _, running_body = await self._listing(self._ps_url)  # one task fewer
            year = time.gmtime().tm_year
            running_key = ollamareplies.residency_key(running_body.content, year)
            version = asked.result() if asked is not None else self._version
            tags_key, tags_body = tags.result()
            seen = self._seen
            made_of = (tags_key, running_key, version)
            if seen is not None and (seen.tags, seen.running, seen.version) == made_of:
                return seen.observation  # the very same object: nothing changed
            models = ollamareplies.listed(tags_body)
            loaded = ollamareplies.loaded(running_body)
            facts = await self._show_facts(models)
            observed = tuple(ollamareplies.observed(m, facts, loaded) for m in models)
        observation = base.Observation(models=observed, healthy=True, version=version)
        # Remembered only when every listed digest had its facts: a missing one is asked again.
        complete = all(m.digest in facts for m in models if m.digest and m.model)
        self._seen = _Seen(tags_key, running_key, version, observation) if complete else None
        return observation

    async def _listing(self, url: httpx.URL) -> tuple[bytes, httpx.Response]:
        """GET ``url`` through the client (its errors: `ResponseError`, `ConnectionError`);
        the body's digest and the response."""
        send = self._client._request_raw  # what list() and ps() send, without their parse
        response: httpx.Response = await send("GET", url)  # type: ignore[no-untyped-call]
        return hashlib.blake2b(response.content, digest_size=16).digest(), response

    async def health(self) -> bool:
        """True when `GET /` answers 2xx, False on any other answer; raises if unreachable."""
        async with self._guard():
            return await self._http.answers("")

    async def version(self) -> str | None:
        """The server version from `/api/version`. Raises `errors.LlmctlError`."""
        async with self._guard():
            return await self._http.version("api/version")

    async def delete(self, model: str) -> None:
        """Delete `model` from the node. Not idempotent by itself: a missing model raises
        `errors.ModelNotFound`, which callers may treat as done."""
        async with self._guard(about_model=True):
            await self._client.delete(model)

    async def preload(self, model: str, keep_alive: str) -> None:
        """Load `model` and keep it for `keep_alive` (a generate with an empty prompt,
        PROTOCOLS §1.8): returns once the runner has loaded. Idempotent (a loaded model's
        expiry is refreshed). Raises `errors.LlmctlError` (ModelNotFound when not installed)."""
        await self._residency(model, keep_alive_value(keep_alive))

    async def unload(self, model: str) -> None:
        """Unload `model` now (`keep_alive: 0`; Ollama unloads asynchronously). A model not
        loaded stays so. Raises `errors.LlmctlError`."""
        await self._residency(model, 0)

    async def _residency(self, model: str, keep_alive: float | str) -> None:
        """A load-only request: a generate with an empty prompt, or for an embedding model
        (which refuses generate with 400 "does not support generate") an embed with no
        input, which loads it too (PROTOCOLS §1.8)."""
        async with self._guard(about_model=True):
            try:
                await self._client.generate(model=model, prompt="", keep_alive=keep_alive)
            except ollama.ResponseError as exc:
                if exc.status_code != 400 or "does not support" not in str(exc.error):
                    raise
                await self._client.embed(model=model, input=[], keep_alive=keep_alive)

    async def pull(self, model: str) -> AsyncIterator[base.PullProgress]:
        """Stream pull progress until ``success``. Each line must arrive within `stall`
        seconds. Closing the iterator early closes the connection (Ollama then cancels the
        download once no other puller waits). Raises `errors.LlmctlError`: ModelNotFound for
        an unknown model, InsufficientDisk, InvalidModelName, temporary errors otherwise."""
        stall = self._timeouts.stall
        async with self._guard(about_model=True, total=stall):
            stream = await self._client.pull(model, stream=True)
        try:
            while True:
                async with self._guard(about_model=True, total=stall):
                    try:
                        item = await anext(stream)
                    except StopAsyncIteration:
                        raise errors.ProtocolError(
                            "pull stream ended before success", backend=self.name
                        ) from None
                progress = base.PullProgress(
                    # Stored and published as is: masked like errors (a proxy may echo).
                    status=redaction.mask(item.status or "", self._secret),
                    digest=item.digest or None,
                    total=item.total,
                    completed=item.completed,
                )
                yield progress
                if progress.status == _SUCCESS:
                    return
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    def _version_due(self) -> bool:
        # A failure is remembered too: a hung endpoint costs one timeout per `version_ttl`.
        at = self._version_at
        return at is None or self._clock() - at >= self._version_ttl

    async def _refresh_version(self) -> str | None:
        """Ask `/api/version` and remember the answer, None when it failed."""
        now = self._clock()
        try:
            self._version = await self.version()
        except errors.LlmctlError:
            self._version = None
        self._version_at = now
        return self._version

    async def _show_facts(
        self, models: Sequence[ollama.ListResponse.Model]
    ) -> dict[str, showcache.ShowFacts]:
        """Facts per digest: cached ones, plus `/api/show` for new digests (bounded)."""
        facts: dict[str, showcache.ShowFacts] = {}
        missing: dict[str, str] = {}
        for model in models:
            if not model.digest or not model.model:
                continue
            cached = self._cache.get(model.digest)
            if cached is not None:
                facts[model.digest] = cached
            else:
                missing.setdefault(model.digest, model.model)
        if not missing:
            return facts
        limit = asyncio.Semaphore(_SHOW_CONCURRENCY)

        async def show(digest: str, name: str) -> None:
            found = await self._shared_show(digest, name, limit)
            if found is not None:
                facts[digest] = found

        async with asyncio.TaskGroup() as group:
            for digest, name in missing.items():
                group.create_task(show(digest, name))
        return facts

    async def _shared_show(
        self, digest: str, name: str, limit: asyncio.Semaphore
    ) -> showcache.ShowFacts | None:
        """The facts of ``digest``: from a fetch another node has under way, else from ours."""
        under_way = self._cache.pending(digest)
        if under_way is None:
            self._cache.start(digest)
            found = None
            try:
                async with limit:
                    found = await self._show(name)
            finally:
                self._cache.finish(digest, found)
            return found
        shared = await asyncio.shield(under_way)  # our cancellation must not cancel theirs
        if shared is not None:
            return shared
        async with limit:  # their fetch failed or found nothing: ask our own node
            found = await self._show(name)
        if found is not None:
            self._cache.put(digest, found)
        return found

    async def _show(self, name: str) -> showcache.ShowFacts | None:
        """None when the model vanished between `/api/tags` and `/api/show`."""
        try:
            response = await self._client.show(name)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return None
            raise
        return ollamareplies.facts_from_show(response.modelinfo or {}, response.capabilities)


def keep_alive_value(text: str) -> float | str:
    """Ollama's `keep_alive` for a declared text: a bare number is seconds and goes as a JSON
    number (Ollama parses a string with Go's `time.ParseDuration`, which wants a unit, so
    ``"-1"`` as a string is refused); anything else (``"10m"``, ``"1h30m"``) as it is."""
    try:
        seconds = float(text)
    except ValueError:
        return text
    return int(seconds) if seconds.is_integer() else seconds


MAPPED = (*failures.MAPPED, ollama.ResponseError, AttributeError, TypeError)
_CLIENT = pathlib.Path(ollama.__file__).parent

# Ollama error texts (PROTOCOLS.md §1.4-1.5) that decide the class whatever the status.
_TEXT_RULES: tuple[tuple[str, type[errors.LlmctlError]], ...] = (
    ("no space left on device", errors.InsufficientDisk),
    ("invalid model name", errors.InvalidModelName),
    ('" is invalid', errors.InvalidModelName),
    ("file does not exist", errors.ModelNotFound),
    ("unauthorized", errors.Unauthorized),
    ("insecure protocol", errors.RequestRejected),
)


def translate(
    exc: BaseException, backend: str, about_model: bool = False
) -> errors.LlmctlError | None:
    """Map an exception of the ollama client; falls back to `failures.translate`. None (let
    it propagate) for a TypeError or AttributeError that our code raised: a bug."""
    if isinstance(exc, ollama.ResponseError):
        return _response_error(exc, backend, about_model)
    if isinstance(exc, AttributeError | TypeError):
        # The client calls .get() on, or ** unpacks, a JSON body that is not an object.
        if not _raised_in_client(exc):
            return None
        return errors.ProtocolError("malformed reply: not a JSON object", backend=backend)
    return failures.translate(exc, backend, about_model)


def _raised_in_client(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by code of the ollama package (its last traceback frame)."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and pathlib.Path(frame.tb_frame.f_code.co_filename).is_relative_to(
        _CLIENT
    )


def _response_error(
    exc: ollama.ResponseError, backend: str, about_model: bool
) -> errors.LlmctlError:
    message = str(exc.error)
    lowered = message.lower()
    status = exc.status_code if exc.status_code > 0 else None
    for needle, cls in _TEXT_RULES:
        if needle in lowered:
            return cls(message, backend=backend, status_code=status)
    if status is None:  # an error line inside a 200 stream: the server failed mid-way
        return errors.ServerError(message, backend=backend)
    return errors.from_status(status, message, backend=backend, about_model=about_model)
