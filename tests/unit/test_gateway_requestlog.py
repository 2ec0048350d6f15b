"""The canonical request line's fields: what a client sent is cut and cannot forge a line."""

from __future__ import annotations

from gateway import exchange, requestlog


def test_the_request_line_escapes_a_model_name_that_would_forge_a_line() -> None:
    record = exchange.Exchange(
        "/v1/chat/completions", model="qwen\n2026-01-01 [info] gateway.request status=200"
    )
    line = requestlog.fields(record)
    assert "\n" not in line["model"]
    assert line["model"].startswith("qwen\\n2026")
    long = exchange.Exchange("/v1/chat/completions", model="m" * 10_000)
    assert len(requestlog.fields(long)["model"]) == requestlog.MODEL_CHARS
