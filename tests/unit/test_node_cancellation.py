"""`nodeagent.cancellation.Transport`: which requests a pull's stop flag ends, over a mock hub."""

from __future__ import annotations

import threading

import httpx2
import pytest

from nodeagent import cancellation

COMMIT = "a" * 40
FILE = f"http://hub.test/org/m/resolve/{COMMIT}/model.safetensors"


def _client(seen: list[str]) -> httpx2.Client:
    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        if request.url.host == "hub.test":
            return httpx2.Response(302, headers={"Location": "http://cdn.test/blob"})
        return httpx2.Response(200, content=b"x" * 1000)

    inner = httpx2.MockTransport(answer)
    return httpx2.Client(transport=cancellation.Transport(inner), follow_redirects=True)


def test_a_stopped_pull_sends_no_request_for_its_files_and_others_pass() -> None:
    seen: list[str] = []
    stop = threading.Event()
    stop.set()
    with _client(seen) as client, cancellation.watching("org/m", COMMIT, stop):
        with pytest.raises(cancellation.Cancelled):
            client.get(FILE)
        other = client.get(f"http://hub.test/org/other/resolve/{COMMIT}/x")

    assert other.status_code == 200
    assert seen == [f"http://hub.test/org/other/resolve/{COMMIT}/x", "http://cdn.test/blob"]


def test_a_body_followed_through_a_redirect_stops_once_its_pull_is_stopped() -> None:
    seen: list[str] = []
    stop = threading.Event()
    with (
        _client(seen) as client,
        cancellation.watching("org/m", COMMIT, stop),
        client.stream("GET", FILE) as response,
    ):
        stop.set()
        with pytest.raises(cancellation.Cancelled):
            response.read()

    assert seen == [FILE, "http://cdn.test/blob"]


def test_once_the_pull_ended_its_flag_no_longer_stops_the_thread_s_requests() -> None:
    seen: list[str] = []
    stop = threading.Event()
    with _client(seen) as client:
        with cancellation.watching("org/m", COMMIT, stop):
            client.get(FILE)
        stop.set()
        again = client.get(FILE)

    assert again.status_code == 200
