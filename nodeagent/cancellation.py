"""Stopping a Hub download that nobody waits for any more, within one network read.

`huggingface_hub` 2.4 has no cancel for `snapshot_download`: its worker threads read each file
in 10 MiB chunks (the progress bars hear of a chunk only once it is whole) and retry cut reads.
So the agent gives the client an HTTP transport of its own (`install()`, through the public
`huggingface_hub.set_client_factory`, once per process) that looks at a stop flag before each
request and between the network reads of each body; a set flag raises `Cancelled`, which no
retry of the client catches, the connection is closed and the hub sends no further byte.

`watching(repo, commit, stop)` ties a flag to the pull of one snapshot (called by
`nodeagent.weights.Cache` around `snapshot_download`): a request is the pull's when its path is
one of the snapshot's files (``/{repo}/resolve/{commit}/...``, or the hub's same-host redirect
``/api/resolve-cache/models/{repo}/{commit}/...``); a request to another host (a CDN) made next
on that thread (no other hub request between), while the pull runs, is the redirect of its last
file and stays the pull's. Requests of no watched pull pass untouched. Requests that go through
a proxy from the environment bypass this transport (httpx mounts its own): those pulls are not
stopped and run to completion.

What the client leaves behind on a stop: finished files stay in the cache (a later pull skips
them); the file in flight is dropped by the client itself (2.4 downloads into a uniquely named
temporary file and deletes it on any failure), so it starts again from byte 0.
Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils import _http as hf_http


class Cancelled(Exception):
    """A pull was stopped because nobody waits for it."""


_lock = threading.Lock()
_installed = False
_watched: dict[tuple[str, ...], threading.Event] = {}  # paths of a snapshot's files -> flag
_thread = threading.local()  # `last`: the flag and host of this thread's last watched request


def install() -> None:
    """Make huggingface_hub's shared client use the cancellable transport (idempotent)."""
    global _installed
    with _lock:  # held throughout: no pull may start on a client about to be closed
        if not _installed:
            set_client_factory(_client)
            _installed = True


@contextlib.contextmanager
def watching(repo: str, commit: str, stop: threading.Event) -> Iterator[None]:
    """Requests for the files of `repo` at `commit` raise `Cancelled` once `stop` is set."""
    fragments = (f"/{repo}/resolve/{commit}/", f"/resolve-cache/models/{repo}/{commit}/")
    with _lock:
        _watched[fragments] = stop
    try:
        yield
    finally:
        with _lock:
            if _watched.get(fragments) is stop:
                del _watched[fragments]
        _thread.last = (None, None)


def check(stop: threading.Event | None) -> None:
    """Raise `Cancelled` when `stop` is set."""
    if stop is not None and stop.is_set():
        raise Cancelled("the pull was stopped: no client waits for it")


def _client() -> httpx2.Client:
    """huggingface_hub's default client (same hook, redirects, no timeout), our transport."""
    return httpx2.Client(
        event_hooks={"request": [hf_http.hf_request_event_hook]},
        follow_redirects=True,
        timeout=None,
        transport=Transport(httpx2.HTTPTransport()),
    )


def _flag(request: httpx2.Request) -> threading.Event | None:
    """The stop flag of the watched pull `request` belongs to, if any."""
    url = request.url
    with _lock:
        for fragments, flag in _watched.items():
            if any(fragment in url.path for fragment in fragments):
                _thread.last = (flag, url.host)
                return flag
        last: tuple[threading.Event | None, str | None] = getattr(_thread, "last", (None, None))
        stop, host = last
        if url.host == host:  # another request to the hub: not a redirect of the last file
            _thread.last = (None, None)
            return None
        return stop if stop is not None and stop in _watched.values() else None


class Transport(httpx2.BaseTransport):
    """Wraps a transport: watched requests and their bodies stop when their flag is set."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        stop = _flag(request)
        check(stop)
        response = self._inner.handle_request(request)
        if stop is None:
            return response
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Body(response.stream, stop),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


class _Body(httpx2.SyncByteStream):
    """A response body that raises `Cancelled` between reads once `stop` is set."""

    def __init__(
        self, inner: httpx2.SyncByteStream | httpx2.AsyncByteStream, stop: threading.Event
    ) -> None:
        assert isinstance(inner, httpx2.SyncByteStream)  # a sync transport's body
        self._inner = inner
        self._stop = stop

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._inner:
            check(self._stop)
            yield piece

    def close(self) -> None:
        self._inner.close()
