"""What a trigger on ``<prefix>.v1.control.trigger`` says (`controller.trigger`)."""

from __future__ import annotations

import pytest

from controller import trigger


def test_a_trigger_names_the_request_it_carries() -> None:
    assert trigger.request_id(trigger.payload("ab" * 16)) == "ab" * 16


@pytest.mark.parametrize("body", [b"{}", b"", b"[]", b"\xff", b'{"request_id": 1}', b'"x"'])
def test_a_message_that_is_not_a_trigger_names_no_request(body: bytes) -> None:
    assert trigger.request_id(body) is None
