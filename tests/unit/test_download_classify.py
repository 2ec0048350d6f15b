"""How a failed pull is classified for the queue, from the wire to the error class: each reply
or transport failure goes through the real Ollama adapter (on an `httpx.MockTransport`), and
`runtimestate.downloads.classify` decides permanent, transient or insufficient disk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from dwqueue import jobs
from runtimestate import downloads, errors
from runtimestate.backends import base, ollama

E = jobs.ErrorClass
Answer = Callable[[httpx.Request], httpx.Response]
TIMEOUTS = base.Timeouts(connect=0.3, read=0.3, stall=0.2, total=0.3)


class Lines(httpx.AsyncByteStream):
    """NDJSON objects, then (optionally) silence: a pull that stops progressing."""

    def __init__(self, objects: list[dict[str, Any]], then_stall: bool = False) -> None:
        self.objects = objects
        self.then_stall = then_stall

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for item in self.objects:
            yield json.dumps(item).encode() + b"\n"
        if self.then_stall:
            await asyncio.sleep(5)

    async def aclose(self) -> None:
        pass


def stream(*objects: dict[str, Any], status: int = 200, then_stall: bool = False) -> Answer:
    def answer(_: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/x-ndjson"}
        return httpx.Response(status, headers=headers, stream=Lines(list(objects), then_stall))

    return answer


def error(status: int, message: str) -> Answer:
    return lambda _: httpx.Response(status, json={"error": message})


def raises(exc: Exception) -> Answer:
    def answer(_: httpx.Request) -> httpx.Response:
        raise exc

    return answer


MANIFEST = {"status": "pulling manifest"}
BLOB = {"status": "pulling 6a0746a1ec1a", "digest": "sha256:6a07", "total": 100, "completed": 10}

CASES: list[tuple[str, Answer, jobs.ErrorClass, str]] = [
    ("invalid name", error(400, "invalid model name"), E.PERMANENT, "invalid_model_name"),
    (
        "unknown model (streamed)",
        stream(MANIFEST, {"error": "pull model manifest: file does not exist"}),
        E.PERMANENT,
        "model_not_found",
    ),
    ("404", error(404, "model 'x' not found"), E.PERMANENT, "model_not_found"),
    ("401", error(401, "unauthorized"), E.PERMANENT, "unauthorized"),
    ("403", lambda _: httpx.Response(403), E.PERMANENT, "unauthorized"),
    (
        "registry 401 (streamed)",
        stream(MANIFEST, {"error": "pull model manifest: unauthorized: access denied"}),
        E.PERMANENT,
        "unauthorized",
    ),
    ("other 4xx", error(422, "bad request"), E.PERMANENT, "rejected"),
    ("500", error(500, "internal error"), E.TRANSIENT, "server_error"),
    ("502", error(502, "bad gateway"), E.TRANSIENT, "unavailable"),
    ("503", error(503, "server busy"), E.TRANSIENT, "unavailable"),
    ("504", error(504, "gateway timeout"), E.TRANSIENT, "timeout"),
    (
        "error line mid-pull",
        stream(MANIFEST, BLOB, {"error": "digest mismatch, file must be downloaded again"}),
        E.TRANSIENT,
        "server_error",
    ),
    ("stalled stream", stream(MANIFEST, BLOB, then_stall=True), E.TRANSIENT, "timeout"),
    (
        "disk full",
        stream(MANIFEST, BLOB, {"error": "write /root/.ollama: no space left on device"}),
        E.INSUFFICIENT_DISK,
        "insufficient_disk",
    ),
    ("connection reset", raises(httpx.ReadError("reset by peer")), E.TRANSIENT, "unavailable"),
    ("connection refused", raises(httpx.ConnectError("refused")), E.TRANSIENT, "unavailable"),
    ("read timeout", raises(httpx.ReadTimeout("slow")), E.TRANSIENT, "timeout"),
    ("connect timeout", raises(httpx.ConnectTimeout("slow")), E.TRANSIENT, "timeout"),
    ("stream ends early", stream(MANIFEST, BLOB), E.TRANSIENT, "protocol"),
]


@pytest.mark.parametrize(
    ("answer", "error_class", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_a_failed_pull_is_classified_from_what_the_backend_did(
    answer: Answer, error_class: jobs.ErrorClass, reason: str
) -> None:
    adapter = ollama.OllamaBackend(
        "http://127.0.0.1:11434",
        name="node-1",
        transport_=httpx.MockTransport(lambda r: answer(r)),
        timeouts=TIMEOUTS,
    )
    async with adapter:
        with pytest.raises(errors.LlmctlError) as caught:
            async for _ in adapter.pull("qwen2:0.5b"):
                pass
    found_class, text = downloads.classify(caught.value)
    assert (found_class, text.split(":")[0]) == (error_class, reason), text
    assert found_class.retryable is (error_class is E.TRANSIENT)


@pytest.mark.parametrize(
    ("exc", "error_class", "reason"),
    [
        (
            errors.ConfigurationError("vllm backends cannot pull models"),
            E.PERMANENT,
            "configuration",
        ),
        (RuntimeError("a bug"), E.TRANSIENT, "unexpected"),
    ],
    ids=["configuration", "unexpected exception"],
)
def test_what_no_backend_said_is_classified_too(
    exc: Exception, error_class: jobs.ErrorClass, reason: str
) -> None:
    found_class, text = downloads.classify(exc)
    assert (found_class, text.split(":")[0]) == (error_class, reason), text
