"""The outcome bulletin on ``<prefix>.v1.outcomes.<backend>``: what is sent reads back the same,
and what cannot be read, or is of a newer version, is refused with the reason."""

from __future__ import annotations

import json

import pytest

from runtimestate.resolver import bulletin

OPENED = bulletin.Breaker(bulletin.OPENED, reopens_in_s=29.5, cooldown_s=30.0)
SENT = bulletin.Bulletin(
    "a1b2c3d4e5f60718",
    "gpu-1",
    (
        bulletin.Entry("llama3:latest", 0.42, 0.49, 3, OPENED),
        bulletin.Entry("qwen2:7b", None, 0.2, 1, bulletin.Breaker(bulletin.CLOSED)),
        bulletin.Entry("phi3", 1.5, 0.0, 12),
    ),
)


def test_a_bulletin_reads_back_as_it_was_sent() -> None:
    assert bulletin.decode(bulletin.encode(SENT), "gpu-1") == SENT


def test_a_bulletin_carries_durations_never_times() -> None:
    doc = json.loads(bulletin.encode(SENT))
    assert doc["v"] == 1
    assert doc["providers"][0]["breaker"] == {
        "state": "opened",
        "reopens_in_s": 29.5,
        "cooldown_s": 30.0,
    }
    assert doc["providers"][1]["breaker"] == {"state": "closed"}
    assert "breaker" not in doc["providers"][2]  # no transition: nothing said of the breaker


def test_fields_a_reader_does_not_know_are_ignored() -> None:
    doc = json.loads(bulletin.encode(SENT))
    doc["sent_by"] = "gateway-7"
    doc["providers"][2]["p99_s"] = 3.0
    assert bulletin.decode(json.dumps(doc).encode(), "gpu-1") == SENT


def test_a_bulletin_of_a_newer_version_is_refused_as_too_new() -> None:
    doc = {**json.loads(bulletin.encode(SENT)), "v": 2}
    with pytest.raises(bulletin.TooNew, match="version 2 is newer than this process reads"):
        bulletin.decode(json.dumps(doc).encode(), "gpu-1")


def _with(**fields: object) -> bytes:
    item = {"model": "m", "latency_s": 0.1, "errors": 0.0, "samples": 1}
    doc = {"v": 1, "origin": "x", "backend": "gpu-1", "providers": [{**item, **fields}]}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"origin": "x"}', "v must be a positive integer"),
        (b'{"v": "1"}', "v must be a positive integer"),
        (b'{"v": 1, "backend": "gpu-1", "providers": []}', "origin must be a non-empty string"),
        (b'{"v": 1, "origin": "x", "backend": "gpu-2", "providers": []}', "is not the subject"),
        (b'{"v": 1, "origin": "x", "backend": "gpu-1"}', "providers must be a list"),
        (_with(model=""), "model must be a non-empty string"),
        (_with(latency_s=-0.1), "latency_s must be between"),
        (_with(errors=1.5), "errors must be between"),
        (_with(errors=True), "errors must be a number"),
        (_with(samples=-1), "samples must be a non-negative integer"),
        (_with(breaker={"state": "ajar"}), "breaker state must be"),
        (_with(breaker={"state": "opened", "cooldown_s": 30}), "reopens_in_s must be a number"),
        (_with(breaker={"state": "opened", "reopens_in_s": 1e400, "cooldown_s": 1}), "between"),
    ],
)
def test_a_message_that_is_not_a_bulletin_is_refused_with_the_reason(
    data: bytes, reason: str
) -> None:
    with pytest.raises(bulletin.Malformed) as raised:
        bulletin.decode(data, "gpu-1")
    assert reason in str(raised.value)
