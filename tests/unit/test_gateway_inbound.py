"""What the gateway sends a provider for one call (`inbound.Call.body_for`): the client's own
bytes when nothing changes, the usage option added to a stream, the model renamed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import inbound


def call(body: bytes, asked_usage: bool = False) -> inbound.Call:
    document = json.loads(body)
    stream = document.get("stream", False)
    return inbound.Call("chat/completions", "chat", document["model"], stream, body, document,
                        asked_usage)  # fmt: skip


def test_nothing_changed_sends_the_clients_bytes() -> None:
    body = b'{"model": "m", "messages": []}'
    assert call(body).body_for("m") is body


@given(
    messages=st.lists(st.dictionaries(st.sampled_from(["role", "content"]), st.text())),
    spaces=st.sampled_from(["", " ", "\n", "\t \n"]),
)
def test_a_stream_gets_include_usage_and_keeps_everything_else(messages, spaces) -> None:
    document = {"model": "m", "messages": messages, "stream": True}
    body = (json.dumps(document, indent=1) + spaces).encode()
    sent = json.loads(call(body).body_for("m"))
    assert sent == {**document, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    ("options", "served"),
    [({"continuous_usage_stats": True}, "m"), (None, "served-name"), ("odd", "m")],
)
def test_other_options_and_a_renamed_model_are_merged_into_the_document(options, served):
    document = {"model": "m", "messages": [], "stream": True}
    if options is not None:
        document["stream_options"] = options
    sent = json.loads(call(json.dumps(document).encode()).body_for(served))
    merged = options if isinstance(options, dict) else {}
    assert sent["model"] == served
    assert sent["stream_options"] == {**merged, "include_usage": True}


def test_a_client_that_asked_for_usage_is_sent_as_is() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    assert call(body, asked_usage=True).body_for("m") is body


def test_a_body_in_utf_16_is_encoded_again_not_spliced() -> None:
    document = {"model": "m", "messages": [{"role": "user", "content": "hé"}], "stream": True}
    body = json.dumps(document).encode("utf-16")
    sent = json.loads(call(body).body_for("m"))
    assert sent == {**document, "stream_options": {"include_usage": True}}
