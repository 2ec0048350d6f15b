"""The fault table and body mutations shared by both emulators."""

from __future__ import annotations

import json

import pytest

from emulators import faults

Kind = faults.FaultKind


def test_a_fault_with_times_is_used_up_and_then_disarmed() -> None:
    table = faults.FaultTable()
    table.set(faults.Fault(Kind.HTTP_500, times=2), endpoint="/api/tags")

    hits = [table.take("/api/tags") for _ in range(3)]

    assert [len(h) for h in hits] == [1, 1, 0]
    assert table.to_dict() == {}


def test_wildcard_faults_hit_every_endpoint_and_specific_ones_only_theirs() -> None:
    table = faults.FaultTable()
    table.set(faults.Fault(Kind.LATENCY, latency=0.1))
    table.set(faults.Fault(Kind.RESET), endpoint="/api/pull")

    assert [f.kind for f in table.take("/api/pull")] == [Kind.RESET, Kind.LATENCY]
    assert [f.kind for f in table.take("/api/tags")] == [Kind.LATENCY]


def test_setting_a_kind_again_replaces_it_and_clear_disarms_one_endpoint() -> None:
    table = faults.FaultTable()
    table.set(faults.Fault(Kind.LATENCY, latency=1.0), endpoint="/a")
    table.set(faults.Fault(Kind.LATENCY, latency=2.0), endpoint="/a")
    table.set(faults.Fault(Kind.HANG), endpoint="/b")

    assert [f.latency for f in table.take("/a")] == [2.0]
    table.clear("/a")
    assert table.take("/a") == []
    assert [f.kind for f in table.take("/b")] == [Kind.HANG]


def test_faults_round_trip_through_their_json_form() -> None:
    fault = faults.Fault(Kind.RESET, after_lines=3, times=1)

    assert faults.Fault.from_dict(json.loads(json.dumps(fault.to_dict()))) == fault


@pytest.mark.parametrize("data", [{"kind": "explode"}, {"kind": "hang", "colour": "red"}, {}])
def test_unknown_kinds_and_fields_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        faults.Fault.from_dict(data)


@pytest.mark.parametrize("body", [b'{"models":[]}', b"{}", b"", b'{"status":"success"}\n'])
def test_malformed_bodies_never_parse(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(faults.malformed(body))


def test_oversized_bodies_reach_the_size_and_still_parse() -> None:
    body = b'{"status":"success"}\n'

    padded = faults.oversized(body, 1000)

    assert len(padded) == 1000
    assert padded.endswith(b"\n")
    assert json.loads(padded) == {"status": "success"}
