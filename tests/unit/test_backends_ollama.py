"""The Ollama adapter against an in-memory `httpx.MockTransport`: parsing, caching, and the
mapping of every reply and failure to `runtimestate.errors`."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest

from runtimestate import errors
from runtimestate.backends import base, ollama, ollamareplies, showcache

LLAMA = "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"
NOMIC = "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f"
FAST = base.Timeouts(connect=0.3, read=0.3, stall=0.3, total=0.3)
SLOW = base.Timeouts(connect=5, read=5, stall=5, total=5)  # a gated reply waits on the test
# Answers from the mock transport never wait: a deadline they could meet only on an idle
# machine would make the tests flaky, so only the timeout test uses FAST.
ROOMY = base.Timeouts(connect=10, read=10, stall=10, total=10)


def _entry(name: str, digest: str, family: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-05-04T17:37:44.706015396-07:00",
        "size": 2019393189,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": None,
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


TAGS = {"models": [_entry("llama3.2:latest", LLAMA, "llama"), _entry("nomic:v1", NOMIC, "bert")]}
PS = {"models": [{**_entry("llama3.2:latest", LLAMA, "llama"), "size_vram": 0}]}
SHOWS = {
    "llama3.2:latest": {
        "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
        "capabilities": ["completion", "tools"],
    },
    "nomic:v1": {
        "model_info": {"general.architecture": "bert", "bert.context_length": 2048},
        "capabilities": ["embedding"],
    },
}


class LineStream(httpx.AsyncByteStream):
    """NDJSON lines, optionally with a pause before one of them (a stalled pull)."""

    def __init__(self, lines: Sequence[bytes], pause_before: int = -1) -> None:
        self.lines = lines
        self.pause_before = pause_before
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, line in enumerate(self.lines):
            if index == self.pause_before:
                await asyncio.sleep(5)
            yield line

    async def aclose(self) -> None:
        self.closed = True


async def drain(progress: AsyncIterator[base.PullProgress], seen: list[base.PullProgress]) -> None:
    async for item in progress:
        seen.append(item)


def ndjson(*objects: dict[str, Any]) -> list[bytes]:
    return [json.dumps(o).encode() + b"\n" for o in objects]


class FakeOllama:
    """Routes by path; `override` replaces the answer for one path."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[httpx.Request] = []
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/nodes/17")
        self.calls[path] += 1
        self.requests.append(request)
        if path in self.override:
            return self.override[path](request)
        if path == "/api/tags":
            return httpx.Response(200, json=TAGS)
        if path == "/api/ps":
            return httpx.Response(200, json=PS)
        if path == "/api/version":
            return httpx.Response(200, json={"version": "0.12.3"})
        if path == "/api/show":
            name = json.loads(request.content)["model"]
            return httpx.Response(200, json=SHOWS[name])
        if path == "/":
            return httpx.Response(200, text="Ollama is running")
        return httpx.Response(404, text="404 page not found")


def backend(fake: Any, **kwargs: Any) -> ollama.OllamaBackend:
    kwargs.setdefault("timeouts", ROOMY)
    return ollama.OllamaBackend(
        "http://127.0.0.1:11434", name="node-1", transport_=httpx.MockTransport(fake), **kwargs
    )


async def test_observe_reports_models_with_details_capabilities_context_and_loaded_state() -> None:
    async with backend(FakeOllama()) as adapter:
        observation = await adapter.observe()
    llama, nomic = observation.models
    assert observation.healthy
    assert observation.version == "0.12.3"
    assert (llama.name, llama.digest, llama.size) == ("llama3.2:latest", LLAMA, 2019393189)
    assert llama.details.family == "llama"
    assert llama.details.quantization_level == "Q4_K_M"
    assert llama.details.families == ()
    assert llama.context_length == 131072
    assert llama.capabilities == {"chat", "prompt", "stream"}
    assert llama.backend_capabilities == {"completion", "tools"}
    assert llama.loaded
    assert llama.modified_at is not None
    assert llama.modified_at.year == 2025
    assert nomic.capabilities == {"embed"}
    assert (nomic.context_length, nomic.loaded) == (2048, False)
    assert nomic.can_embed
    assert not nomic.can_chat


async def test_observe_asks_show_once_per_digest_across_cycles() -> None:
    fake = FakeOllama()
    async with backend(fake) as adapter:
        await adapter.observe()
        second = await adapter.observe()
    assert fake.calls["/api/show"] == 2
    assert fake.calls["/api/tags"] == 2
    assert second.models[0].context_length == 131072


def _second(fake: Any, cache: showcache.ShowCache) -> ollama.OllamaBackend:
    return ollama.OllamaBackend(
        "http://127.0.0.1:11434",
        name="node-2",
        transport_=httpx.MockTransport(fake),
        show_cache=cache,
        timeouts=ROOMY,
    )


async def test_show_cache_is_shared_by_digest_across_backends() -> None:
    fake, cache = FakeOllama(), showcache.ShowCache()
    async with backend(fake, show_cache=cache) as first:
        await first.observe()
    async with _second(fake, cache) as second:
        observation = await second.observe()
    assert fake.calls["/api/show"] == 2
    assert len(cache) == 2
    assert observation.models[0].context_length == 131072


class SlowShows(FakeOllama):
    """`/api/show` answers only after `delay` seconds, or once `gate` is set when one is given
    (an async MockTransport handler)."""

    def __init__(self, delay: float = 0.05, gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.gate = gate

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(self.delay)
        return self(request)


class WatchedCache(showcache.ShowCache):
    """A show cache that says when a fetch was announced and when a caller found one under way."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.waited = asyncio.Event()

    def start(self, digest: str) -> None:
        super().start(digest)
        self.started.set()

    def pending(self, digest: str) -> asyncio.Future[showcache.ShowFacts | None] | None:
        found = super().pending(digest)
        if found is not None:
            self.waited.set()
        return found


async def test_backends_observed_at_once_ask_show_once_per_digest() -> None:
    fake, cache = SlowShows(), showcache.ShowCache()
    adapters = [
        ollama.OllamaBackend(
            "http://127.0.0.1:11434", name=f"node-{i}", show_cache=cache, timeouts=ROOMY,
            transport_=httpx.MockTransport(fake.handle),
        )
        for i in range(5)
    ]  # fmt: skip
    observations = await asyncio.gather(*(a.observe() for a in adapters))
    await asyncio.gather(*(a.aclose() for a in adapters))
    assert fake.calls["/api/show"] == 2
    assert {o.models[1].context_length for o in observations} == {2048}


async def test_a_failed_shared_show_makes_the_waiting_backend_ask_its_own_node() -> None:
    release = asyncio.Event()
    broken, healthy = SlowShows(gate=release), SlowShows()
    cache = WatchedCache()
    broken.override["/api/show"] = lambda _: httpx.Response(404, json={"error": "gone"})
    first = ollama.OllamaBackend(
        "http://127.0.0.1:11434", name="node-1", show_cache=cache, timeouts=SLOW,
        transport_=httpx.MockTransport(broken.handle),
    )  # fmt: skip
    async with first, _second(healthy.handle, cache) as second:
        asking = asyncio.create_task(first.observe())
        await asyncio.wait_for(cache.started.wait(), 5)  # node-1's shows are under way
        observing = asyncio.create_task(second.observe())
        await asyncio.wait_for(cache.waited.wait(), 5)  # node-2 waits on node-1's fetch
        release.set()  # node-1's shows fail only now
        ok, failed = await observing, await asking
    assert failed.models[0].context_length is None
    assert ok.models[0].context_length == 131072
    assert (broken.calls["/api/show"], healthy.calls["/api/show"]) == (2, 2)


async def test_an_unchanged_node_returns_the_same_observation_object() -> None:
    fake = FakeOllama()
    async with backend(fake) as adapter:
        first = await adapter.observe()
        second = await adapter.observe()
    assert second is first
    assert fake.calls["/api/tags"] == 2  # asked every time; only the parse is skipped


def _ps_expiring(expiries: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """An `/api/ps` reply whose loaded model expires at the next of `expiries` each call."""
    moments = iter(expiries)
    return lambda _: httpx.Response(
        200, json={"models": [{**PS["models"][0], "expires_at": next(moments)}]}
    )


async def test_a_model_kept_loaded_forever_does_not_make_each_observation_new() -> None:
    fake = FakeOllama()  # Ollama renders keep_alive -1 as now + ~292 years, new in every reply
    fake.override["/api/ps"] = _ps_expiring(
        ["2318-03-01T10:00:00.123456789Z", "2318-03-01T10:00:05.987654321Z"]
    )
    async with backend(fake) as adapter:
        first = await adapter.observe()
        second = await adapter.observe()
    assert second is first
    assert first.models[0].loaded


async def test_a_model_whose_expiry_moves_within_a_century_is_observed_anew() -> None:
    fake = FakeOllama()
    year = time.gmtime().tm_year
    fake.override["/api/ps"] = _ps_expiring(
        [f"{year + 1}-03-01T10:05:00Z", f"{year + 1}-03-01T10:10:00Z"]
    )
    async with backend(fake) as adapter:
        first = await adapter.observe()
        second = await adapter.observe()
    assert second is not first
    assert second.models[0].expires_at is not None
    assert second.models[0].expires_at.minute == 10


async def test_a_changed_model_list_or_loaded_set_is_observed_anew() -> None:
    fake = FakeOllama()
    async with backend(fake) as adapter:
        first = await adapter.observe()
        fake.override["/api/tags"] = lambda _: httpx.Response(
            200, json={"models": TAGS["models"][1:]}
        )
        fewer = await adapter.observe()
        fake.override["/api/ps"] = lambda _: httpx.Response(200, json={"models": []})
        unloaded = await adapter.observe()
    assert [m.name for m in first.models] == ["llama3.2:latest", "nomic:v1"]
    assert [m.name for m in fewer.models] == ["nomic:v1"]
    assert [m.loaded for m in first.models] == [True, False]
    assert fewer is not first
    assert unloaded is not fewer
    assert [m.loaded for m in unloaded.models] == [False]


async def test_a_model_whose_digest_changes_is_shown_again() -> None:
    fake, other = FakeOllama(), "f" * 64
    async with backend(fake) as adapter:
        await adapter.observe()
        models = [dict(TAGS["models"][0], digest=other), TAGS["models"][1]]
        fake.override["/api/tags"] = lambda _: httpx.Response(200, json={"models": models})
        embedder = {**SHOWS["llama3.2:latest"], "capabilities": ["embedding"]}
        fake.override["/api/show"] = lambda _: httpx.Response(200, json=embedder)
        changed = await adapter.observe()
    assert fake.calls["/api/show"] == 3
    assert changed.models[0].digest == other
    assert changed.models[0].capabilities == {"embed"}


async def test_observe_keeps_a_path_prefix_in_every_request() -> None:
    fake = FakeOllama()
    async with ollama.OllamaBackend(
        "http://127.0.0.1:9000/nodes/17", name="n", transport_=httpx.MockTransport(fake)
    ) as adapter:
        await adapter.observe()
        await adapter.health()
    paths = {r.url.path for r in fake.requests}
    assert paths == {
        f"/nodes/17{p}" for p in ("/api/tags", "/api/ps", "/api/version", "/api/show", "/")
    }


@pytest.mark.parametrize(
    "base_url", ["http://node", "http://node:9000/nodes/17", "https://node/nodes/17/"]
)
async def test_observe_asks_the_urls_the_clients_own_list_and_ps_ask(base_url: str) -> None:
    fake = FakeOllama()
    async with ollama.OllamaBackend(base_url, transport_=httpx.MockTransport(fake)) as adapter:
        await adapter.observe()
        ours = [str(r.url) for r in fake.requests if r.url.path.endswith(("/tags", "/ps"))]
        fake.requests.clear()
        await adapter._client.list()
        await adapter._client.ps()
    assert sorted(ours) == sorted(str(r.url) for r in fake.requests)


async def test_a_cookie_a_node_sets_is_never_sent_back() -> None:
    fake = FakeOllama()
    fake.override["/api/tags"] = lambda _: httpx.Response(
        200, json=TAGS, headers={"set-cookie": "session=abc; Path=/"}
    )
    async with backend(fake) as adapter:
        await adapter.observe()
        await adapter.observe()
        await adapter.health()
    assert len(fake.requests) > 3
    assert not [r for r in fake.requests if "cookie" in r.headers]


async def test_a_model_removed_between_tags_and_show_is_listed_without_facts() -> None:
    fake = FakeOllama()
    fake.override["/api/show"] = lambda _: httpx.Response(
        404, json={"error": "model 'x' not found"}
    )
    async with backend(fake) as adapter:
        first = await adapter.observe()
        await adapter.observe()
    assert first.models[0].capabilities == frozenset()
    assert first.models[0].context_length is None
    assert fake.calls["/api/show"] == 4  # nothing was cached


def test_facts_from_an_old_server_without_capabilities_are_derived_like_ollama() -> None:
    embed = ollamareplies.facts_from_show(
        {"general.architecture": "bert", "bert.pooling_type": 1}, None
    )
    chat = ollamareplies.facts_from_show({}, None)
    assert embed.backend_capabilities == {"embedding"}
    assert chat.backend_capabilities == {"completion"}
    assert chat.context_length is None


async def test_observe_rereads_the_version_only_after_its_ttl() -> None:
    fake, now = FakeOllama(), [1000.0]
    async with backend(fake, version_ttl=60, clock=lambda: now[0]) as adapter:
        await adapter.observe()
        now[0] += 59
        await adapter.observe()
        assert fake.calls["/api/version"] == 1
        now[0] += 2
        await adapter.observe()
    assert fake.calls["/api/version"] == 2


async def test_a_failing_version_endpoint_only_leaves_the_version_empty() -> None:
    fake = FakeOllama()
    fake.override["/api/version"] = lambda _: httpx.Response(500, json={"error": "boom"})
    async with backend(fake) as adapter:
        observation = await adapter.observe()
    assert observation.version is None
    assert len(observation.models) == 2


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    return handler


OBSERVE_FAULTS: list[tuple[str, Callable[[httpx.Request], httpx.Response], type[Exception]]] = [
    ("refused", _raise(httpx.ConnectError("refused")), errors.BackendUnavailable),
    ("connect timeout", _raise(httpx.ConnectTimeout("slow")), errors.BackendTimedOut),
    ("read timeout", _raise(httpx.ReadTimeout("slow")), errors.BackendTimedOut),
    ("reset", _raise(httpx.ReadError("reset by peer")), errors.BackendUnavailable),
    ("closed", _raise(httpx.RemoteProtocolError("closed")), errors.BackendUnavailable),
    ("http 500", lambda _: httpx.Response(500, json={"error": "boom"}), errors.ServerError),
    ("http 503", lambda _: httpx.Response(503, json={"error": "busy"}), errors.BackendUnavailable),
    ("http 401", lambda _: httpx.Response(401, json={"error": "no"}), errors.Unauthorized),
    ("http 403", lambda _: httpx.Response(403), errors.Unauthorized),
    ("route 404", lambda _: httpx.Response(404, text="404 page not found"), errors.RequestRejected),
    (
        "truncated json",
        lambda _: httpx.Response(200, content=b'{"models": ['),
        errors.ProtocolError,
    ),
    ("json list", lambda _: httpx.Response(200, json=[1, 2]), errors.ProtocolError),
    ("error body list", lambda _: httpx.Response(500, json=[1]), errors.ProtocolError),
    ("null models", lambda _: httpx.Response(200, json={"models": None}), errors.ProtocolError),
    (
        "bad entry",
        lambda _: httpx.Response(200, json={"models": [{"size": "x"}]}),
        errors.ProtocolError,
    ),
    ("oversized", lambda _: httpx.Response(200, content=b" " * 5000), errors.ProtocolError),
]


@pytest.mark.parametrize(
    ("path", "fault"),
    [("/api/tags", f) for f in OBSERVE_FAULTS] + [("/api/ps", f) for f in OBSERVE_FAULTS[:6]],
)
async def test_observe_maps_every_failure_to_the_error_tree(path: str, fault: Any) -> None:
    _, answer, expected = fault
    fake = FakeOllama()
    fake.override[path] = answer
    async with backend(fake, max_body_bytes=4096) as adapter:
        with pytest.raises(expected) as caught:
            await adapter.observe()
    assert type(caught.value) is expected
    assert caught.value.backend == "node-1"
    assert caught.value.__cause__ is not None


async def test_observe_maps_a_failing_show_to_the_error_tree() -> None:
    fake = FakeOllama()
    fake.override["/api/show"] = lambda _: httpx.Response(200, json={"details": {}})
    async with backend(fake) as adapter:
        with pytest.raises(errors.ProtocolError):
            await adapter.observe()


@pytest.mark.parametrize("body", [[1, 2], "a string", 3])
async def test_a_show_reply_that_is_not_a_json_object_is_a_protocol_error(body: Any) -> None:
    fake = FakeOllama()
    fake.override["/api/show"] = lambda _: httpx.Response(200, json=body)
    async with backend(fake) as adapter:
        with pytest.raises(errors.ProtocolError, match="not a JSON object"):
            await adapter.observe()


@pytest.mark.parametrize("error", [TypeError("bad"), AttributeError("bad"), KeyError("digest")])
async def test_a_bug_in_the_ollama_parser_propagates_as_itself_not_as_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(*_: object) -> Any:
        raise error

    monkeypatch.setattr(ollamareplies, "loaded", broken)
    async with backend(FakeOllama()) as adapter:
        with pytest.raises(type(error)) as caught:
            await adapter.observe()
    assert caught.value is error


async def test_a_hung_node_costs_at_most_the_total_timeout() -> None:
    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    started = time.monotonic()
    async with backend(hang, timeouts=FAST) as adapter:
        with pytest.raises(errors.BackendTimedOut):
            await adapter.observe()
    assert time.monotonic() - started < FAST.total + 0.2


PULL_OK = ndjson(
    {"status": "pulling manifest"},
    {"status": "pulling a80c4f17acd5", "digest": f"sha256:{LLAMA}", "total": 100},
    {"status": "pulling a80c4f17acd5", "digest": f"sha256:{LLAMA}", "total": 100, "completed": 100},
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
)


def _pull_answer(lines: Sequence[bytes], status: int = 200, pause: int = -1) -> Any:
    stream = LineStream(lines, pause_before=pause)

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, headers={"content-type": "application/x-ndjson"}, stream=stream
        )

    answer.stream = stream  # type: ignore[attr-defined]
    return answer


async def test_pull_streams_progress_until_success() -> None:
    fake = FakeOllama()
    fake.override["/api/pull"] = _pull_answer(PULL_OK)
    async with backend(fake) as adapter:
        progress = [p async for p in adapter.pull("llama3.2")]
    assert progress[0].status == "pulling manifest"
    assert progress[-1] == base.PullProgress(status="success")
    assert progress[1] == base.PullProgress("pulling a80c4f17acd5", f"sha256:{LLAMA}", 100, None)
    assert progress[2].completed == 100
    sent = json.loads(fake.requests[-1].content)
    assert sent == {"model": "llama3.2", "insecure": False, "stream": True}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            _pull_answer(
                ndjson(
                    {"status": "pulling manifest"},
                    {"error": "pull model manifest: file does not exist"},
                )
            ),
            errors.ModelNotFound,
        ),
        (
            _pull_answer(
                ndjson(
                    {"status": "pulling manifest"}, {"error": "write /x: no space left on device"}
                )
            ),
            errors.InsufficientDisk,
        ),
        (
            _pull_answer(ndjson({"error": "digest mismatch, file must be downloaded again"})),
            errors.ServerError,
        ),
        (
            _pull_answer(ndjson({"error": "pull model manifest: unauthorized: access denied"})),
            errors.Unauthorized,
        ),
        (
            _pull_answer(ndjson({"error": "invalid model name"}), status=400),
            errors.InvalidModelName,
        ),
        (
            _pull_answer(ndjson({"error": "insecure protocol http"}), status=500),
            errors.RequestRejected,
        ),
        (
            _pull_answer(ndjson({"error": "pull model manifest: file does not exist"}), status=500),
            errors.ModelNotFound,
        ),
        (_pull_answer(ndjson({"status": "pulling manifest"})), errors.ProtocolError),
        (
            _pull_answer([b'{"status": "pulling manifest"}\n', b'{"status": "pul\n']),
            errors.ProtocolError,
        ),
        (
            _pull_answer([b'{"status": "pulling manifest"}\n', b" " * 5000 + b"\n"]),
            errors.ProtocolError,
        ),
        (_pull_answer([b"[1]\n"]), errors.ProtocolError),
        (_raise(httpx.ConnectError("refused")), errors.BackendUnavailable),
        (_raise(httpx.ReadError("reset")), errors.BackendUnavailable),
        (_raise(httpx.ReadTimeout("slow")), errors.BackendTimedOut),
    ],
)
async def test_pull_maps_every_failure_to_the_error_tree(
    answer: Any, expected: type[Exception]
) -> None:
    fake = FakeOllama()
    fake.override["/api/pull"] = answer
    seen: list[base.PullProgress] = []
    async with backend(fake, max_body_bytes=4096) as adapter:
        with pytest.raises(expected) as caught:
            await drain(adapter.pull("llama3.2"), seen)
    assert type(caught.value) is expected
    assert all(p.status != "success" for p in seen)


async def test_a_stalled_pull_fails_within_the_stall_timeout_and_closes_the_stream() -> None:
    fake = FakeOllama()
    answer = _pull_answer(PULL_OK, pause=2)
    fake.override["/api/pull"] = answer
    seen: list[base.PullProgress] = []
    started = time.monotonic()
    async with backend(fake, timeouts=base.Timeouts(read=5, stall=0.2, total=5)) as adapter:
        with pytest.raises(errors.BackendTimedOut):
            await drain(adapter.pull("llama3.2"), seen)
    assert time.monotonic() - started < 0.6
    assert len(seen) == 2
    assert answer.stream.closed


async def test_leaving_a_pull_early_closes_the_connection() -> None:
    fake = FakeOllama()
    answer = _pull_answer(PULL_OK)
    fake.override["/api/pull"] = answer
    async with backend(fake) as adapter:
        pulling = adapter.pull("llama3.2")
        first = await anext(pulling)
        await pulling.aclose()  # type: ignore[attr-defined]
    assert first.status == "pulling manifest"
    assert answer.stream.closed


async def test_delete_sends_the_model_and_accepts_an_empty_200() -> None:
    fake = FakeOllama()
    fake.override["/api/delete"] = lambda _: httpx.Response(200)
    async with backend(fake) as adapter:
        await adapter.delete("llama3.2:latest")
    request = fake.requests[-1]
    assert (request.method, json.loads(request.content)) == ("DELETE", {"model": "llama3.2:latest"})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(404, json={"error": "model 'x:latest' not found"}), errors.ModelNotFound),
        (httpx.Response(400, json={"error": 'name "x!" is invalid'}), errors.InvalidModelName),
        (httpx.Response(500, json={"error": "remove /m: permission denied"}), errors.ServerError),
    ],
)
async def test_delete_maps_failures(answer: httpx.Response, expected: type[Exception]) -> None:
    fake = FakeOllama()
    fake.override["/api/delete"] = lambda _: answer
    async with backend(fake) as adapter:
        with pytest.raises(expected):
            await adapter.delete("x")


async def test_health_is_true_when_running_false_on_an_error_and_raises_when_unreachable() -> None:
    fake = FakeOllama()
    async with backend(fake) as adapter:
        assert await adapter.health() is True
        fake.override["/"] = lambda _: httpx.Response(500)
        assert await adapter.health() is False
        fake.override["/"] = _raise(httpx.ConnectError("refused"))
        with pytest.raises(errors.BackendUnavailable):
            await adapter.health()


async def test_the_api_key_is_sent_as_bearer_and_never_appears_in_errors() -> None:
    fake = FakeOllama()
    fake.override["/api/tags"] = lambda r: httpx.Response(401, json={"error": "unauthorized"})
    async with backend(fake, api_key="sk-very-secret") as adapter:
        with pytest.raises(errors.Unauthorized) as caught:
            await adapter.observe()
    assert fake.requests[0].headers["authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in str(caught.value) + repr(caught.value)
