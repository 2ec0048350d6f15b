"""The controller's log configuration: what reaches the stream, and what never does."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Literal

import pytest
import structlog

from controller import logs


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)


def _fail_holding_a_secret(api_key: str) -> None:
    headers = {"authorization": f"Bearer {api_key}"}  # noqa: F841 - a traceback could show it
    raise RuntimeError("the backend refused the request")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_traceback_never_shows_local_variables(fmt: Literal["json", "console"]) -> None:
    out = io.StringIO()
    logs.configure(fmt, stream=out)
    secret = "sk-" + secrets.token_hex(12)
    try:
        _fail_holding_a_secret(secret)
    except RuntimeError:
        structlog.get_logger("t").warning("call failed", exc_info=True)
    text = out.getvalue()
    assert "the backend refused the request" in text  # the traceback is there
    assert "_fail_holding_a_secret" in text
    assert secret not in text


def test_json_lines_carry_level_timestamp_and_fields() -> None:
    out = io.StringIO()
    logs.configure("json", stream=out)
    structlog.get_logger("t").info("backend_cycle", backends=3)
    line = json.loads(out.getvalue())
    assert (line["event"], line["level"], line["backends"]) == ("backend_cycle", "info", 3)
    assert line["timestamp"].endswith("Z")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as standard error in a shell does."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "styled"), [("", True), ("1", False)])
def test_console_logs_on_a_terminal_are_coloured_unless_no_color_is_set(
    monkeypatch: pytest.MonkeyPatch, no_color: str, styled: bool
) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    out = _Terminal()
    logs.configure("console", stream=out)
    try:
        _fail_holding_a_secret("sk-none")
    except RuntimeError:
        structlog.get_logger().exception("cycle failed", backend="gpu-1")
    assert "cycle failed" in out.getvalue()
    assert "the backend refused the request" in out.getvalue()
    assert ("\x1b[" in out.getvalue()) is styled
