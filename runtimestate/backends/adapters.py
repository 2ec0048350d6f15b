"""The adapter pool: one long-lived backend adapter per declared backend, reused across cycles.

Called by the backend and download cycles. An adapter keeps its connection pool and caches
(``/api/show`` facts, shared by digest across the fleet; the version; its last observation)
between cycles, which makes every cycle after the first several times cheaper; it is rebuilt
only when the backend's type, URL or credentials change, and closed when the backend is no
longer declared. The pool remembers the key each adapter sends, so callers can mask it out of
error text before they record it (`redact`, a second line behind the adapters' own masking).
All adapters send through one shared aiohttp
connection pool (`aiotransport.SharedSession`), owned here and closed by `aclose()`. Keys are
resolved here, at the last moment, and handed only to the adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from runtimestate import backends, credentials, errors
from runtimestate.backends import aiotransport, base, redaction, showcache, transport
from runtimestate.desired import spec

Adapter = backends.Backend
# Entries are per digest, shared by the whole fleet: distinct models, not backends x models.
# A bound below the fleet's distinct digests would evict every cycle and re-fetch /api/show.
SHOW_CACHE_ENTRIES = 16_384


def _identity(backend: spec.BackendSpec) -> tuple[str, str, str, str | None]:
    creds = backend.credentials
    return (
        backend.type.value,
        backend.url,
        creds.describe() if creds else "",
        creds.ciphertext if creds else None,
    )


class AdapterPool:
    """Adapters keyed by backend name; not thread-safe (one event loop owns it)."""

    def __init__(
        self, timeouts: base.Timeouts = base.Timeouts(), environ: Mapping[str, str] | None = None
    ) -> None:
        self._timeouts = timeouts
        self._environ = environ if environ is not None else {}
        self._show_cache = showcache.ShowCache(SHOW_CACHE_ENTRIES)
        self._connections = transport.shared_session()
        self._adapters: dict[str, tuple[tuple[str, str, str, str | None], Adapter]] = {}
        self._secrets: dict[str, credentials.Secret] = {}

    def get(self, backend: spec.BackendSpec) -> Adapter:
        """The adapter for ``backend``, built on first use or when its spec moved.

        Raises `errors.ConfigurationError` when its credentials cannot be resolved.
        """
        identity = _identity(backend)
        held = self._adapters.get(backend.name)
        if held is not None and held[0] == identity:
            return held[1]
        if held is not None:
            _close_later(held[1])
        try:
            secret = credentials.resolve(backend.credentials, self._environ)
        except credentials.CredentialError as exc:
            raise errors.ConfigurationError(str(exc), backend=backend.name) from None
        adapter = backends.create(
            backend.type.value,
            spec.api_url(backend.type, backend.url),  # heals rows stored before the normal form
            name=backend.name,
            api_key=secret.reveal() if secret else None,
            timeouts=self._timeouts,
            transport_=aiotransport.AiohttpTransport(self._connections),
            show_cache=self._show_cache,
        )
        self._adapters[backend.name] = (identity, adapter)
        if secret is not None:
            self._secrets[backend.name] = secret
        else:
            self._secrets.pop(backend.name, None)
        return adapter

    def redact(self, name: str, text: str) -> str:
        """``text`` with the key the adapter of backend ``name`` sends masked out (as is when
        it sends none or has not been built)."""
        secret = self._secrets.get(name)
        return redaction.mask(text, secret.reveal() if secret is not None else None)

    async def retain(self, names: Iterable[str]) -> None:
        """Close the adapters of backends not in ``names`` (no longer declared)."""
        keep = set(names)
        for name in [n for n in self._adapters if n not in keep]:
            _, adapter = self._adapters.pop(name)
            self._secrets.pop(name, None)
            await adapter.aclose()

    async def aclose(self) -> None:
        """Close every adapter, then the shared connection pool. Not reusable afterwards."""
        await self.retain(())
        await self._connections.aclose()


_closing: set[asyncio.Task[None]] = set()


def _close_later(adapter: Adapter) -> None:
    # A replaced adapter may still be in use by a pull started before the change; close it
    # in the background so the caller is not held up, and keep a reference until done.
    task = asyncio.get_running_loop().create_task(adapter.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
