"""Colour only where it helps: on a terminal, never under ``NO_COLOR``, never into a pipe.

Runs the installed ``llmctl`` with its output on a pseudo-terminal, as a person's shell does.
"""

from __future__ import annotations

import os
import pathlib
import pty
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from controller import cli

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
ESC = b"\x1b"


@pytest.fixture
def environ(sqlite_url: str) -> dict[str, str]:
    """A colour terminal's environment over a database with one backend; no NO_COLOR."""
    added = CliRunner().invoke(
        cli.app,
        ["--database-url", sqlite_url, "backend", "add", "gpu-1", "--url", "http://h:1",
         "--type", "ollama"],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    skip = ("LLMCTL_", "NO_COLOR", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "_TYPER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    return {**env, "LLMCTL_DATABASE_URL": sqlite_url, "TERM": "xterm-256color", "COLUMNS": "120"}


def run(
    args: list[str], env: dict[str, str], *, out_tty: bool = True, err_tty: bool = True
) -> tuple[bytes, bytes]:
    """``llmctl ARGS`` with standard output and error on a pseudo-terminal or a pipe each;
    what reached each (both are the terminal's bytes when both are on it)."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [LLMCTL, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower if out_tty else subprocess.PIPE,
        stderr=follower if err_tty else subprocess.PIPE,
    ) as proc:
        os.close(follower)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not chunk:
                break
            screen += chunk
        os.close(leader)
        piped_out, piped_err = proc.communicate(timeout=60)
    return (screen if out_tty else piped_out), (screen if err_tty else piped_err)


def test_an_error_on_a_terminal_is_red_and_has_no_escape_under_no_color(
    environ: dict[str, str],
) -> None:
    _, coloured = run(["backend", "get", "nope"], environ)
    assert b"error:" in coloured
    assert ESC + b"[" in coloured
    _, plain = run(["backend", "get", "nope"], {**environ, "NO_COLOR": "1"})
    assert b"error: backend 'nope' does not exist" in plain
    assert ESC not in plain


@pytest.mark.parametrize(
    "args",
    [["--help"], ["backend", "list"], ["backend", "get"]],
    ids=["help", "table", "usage-error"],
)
def test_no_color_leaves_help_tables_and_usage_errors_without_any_escape(
    environ: dict[str, str], args: list[str]
) -> None:
    screen, _ = run(args, {**environ, "NO_COLOR": "1"})
    assert b"gpu-1" in screen or b"Usage" in screen
    assert ESC not in screen


def test_help_on_a_terminal_is_plain_text_as_kubectls(environ: dict[str, str]) -> None:
    screen, _ = run(["--help"], environ)  # no rich rendering: it is fast and copies cleanly
    assert b"Usage: llmctl" in screen
    assert ESC not in screen


def test_an_error_is_plain_when_standard_error_is_not_a_terminal(
    environ: dict[str, str],
) -> None:
    _, to_pipe = run(["backend", "get", "nope"], environ, err_tty=False)  # stdout on a terminal
    assert to_pipe.startswith(b"error: backend 'nope' does not exist")
    assert ESC not in to_pipe
