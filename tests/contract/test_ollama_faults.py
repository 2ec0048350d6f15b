"""Every fault kind, seen through the official Ollama clients over loopback HTTP."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import pytest

from emulators import faults
from emulators import ollama as emulator

Kind = faults.FaultKind


def test_latency_delays_the_answer_but_it_still_succeeds(ollama_thread: emulator.Emulator) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.LATENCY, latency=0.2), endpoint="/api/tags")
    client = ollama.Client(host=ollama_thread.url)

    started = time.monotonic()
    listed = client.list()
    elapsed = time.monotonic() - started

    assert elapsed >= 0.2
    assert len(listed.models) == 2


def test_hang_never_answers_so_the_client_times_out(ollama_thread: emulator.Emulator) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.HANG), endpoint="/api/tags")
    client = ollama.Client(host=ollama_thread.url, timeout=0.2)

    with pytest.raises(httpx.ReadTimeout):
        client.list()

    assert client.ps().models == []  # other endpoints still answer


def test_http_500_raises_response_error_and_times_limits_it(
    ollama_thread: emulator.Emulator,
) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.HTTP_500, times=1))
    client = ollama.Client(host=ollama_thread.url)

    with pytest.raises(ollama.ResponseError) as caught:
        client.list()

    assert caught.value.status_code == 500
    assert len(client.list().models) == 2  # the fault was used up


def test_reset_mid_stream_drops_the_pull_after_the_given_lines(
    ollama_thread: emulator.Emulator,
) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.RESET, after_lines=2), endpoint="/api/pull")
    client = ollama.Client(host=ollama_thread.url)
    seen: list[str] = []

    with pytest.raises(httpx.TransportError):
        seen.extend(p.status or "" for p in client.pull("all-minilm", stream=True))

    assert len(seen) == 2
    assert seen[0] == "pulling manifest"


def test_reset_of_a_plain_request_drops_the_connection(ollama_thread: emulator.Emulator) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.RESET), endpoint="/api/ps")

    with pytest.raises(httpx.TransportError):
        httpx.get(ollama_thread.url + "/api/ps")


def test_malformed_json_breaks_the_client_parse(ollama_thread: emulator.Emulator) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.MALFORMED), endpoint="/api/tags")
    client = ollama.Client(host=ollama_thread.url)

    with pytest.raises(json.JSONDecodeError):
        client.list()


def test_malformed_line_mid_stream_breaks_the_streamed_pull(
    ollama_thread: emulator.Emulator,
) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.MALFORMED, after_lines=1), endpoint="/api/pull")
    client = ollama.Client(host=ollama_thread.url)
    seen: list[str] = []

    with pytest.raises(json.JSONDecodeError):
        seen.extend(p.status or "" for p in client.pull("all-minilm", stream=True))

    assert seen == ["pulling manifest"]


def test_oversized_body_is_padded_to_the_size_and_still_parses(
    ollama_thread: emulator.Emulator,
) -> None:
    fault = faults.Fault(Kind.OVERSIZED, size=3_000_000)
    ollama_thread.set_fault(fault, endpoint="/api/tags", node=0)

    raw = httpx.get(ollama_thread.url + "/api/tags")
    listed = ollama.Client(host=ollama_thread.url).list()

    assert len(raw.content) == 3_000_000
    assert len(listed.models) == 2


def test_oversized_line_in_a_stream_is_padded(ollama_thread: emulator.Emulator) -> None:
    fault = faults.Fault(Kind.OVERSIZED, size=1_000_000, after_lines=1)
    ollama_thread.set_fault(fault, endpoint="/api/pull")

    raw = httpx.post(ollama_thread.url + "/api/pull", json={"model": "all-minilm"})

    lines = raw.content.split(b"\n")
    assert len(lines[1]) + 1 == 1_000_000
    assert json.loads(lines[1])["status"].startswith("pulling ")


def test_faults_on_one_endpoint_leave_others_alone(ollama_thread: emulator.Emulator) -> None:
    ollama_thread.set_fault(faults.Fault(Kind.HTTP_500), endpoint="/api/ps")
    client = ollama.Client(host=ollama_thread.url)

    assert len(client.list().models) == 2
    with pytest.raises(ollama.ResponseError):
        client.ps()
    ollama_thread.clear_faults()
    assert client.ps().models == []
