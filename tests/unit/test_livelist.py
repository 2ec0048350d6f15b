"""What a live list counts as a change (`controller.livelist.change_key`): pure."""

from __future__ import annotations

from controller import livelist


def test_a_change_of_only_volatile_fields_is_no_change() -> None:
    volatile = (("status", "lastOkAt"),)
    before = [{"name": "gpu-0", "status": {"phase": "Ready", "lastOkAt": "10:00"}}]
    later = [{"name": "gpu-0", "status": {"phase": "Ready", "lastOkAt": "10:01"}}]
    worse = [{"name": "gpu-0", "status": {"phase": "Degraded", "lastOkAt": "10:00"}}]
    key = livelist.change_key(before, volatile)
    assert livelist.change_key(later, volatile) == key
    assert livelist.change_key(worse, volatile) != key
    assert livelist.change_key([{"name": "gpu-0", "status": None}], volatile) != key
