"""The installed ``llmctl`` console script, run as a separate process as a user runs it."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")


def _run(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMCTL, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_console_script_declares_on_the_default_embedded_database(
    tmp_path: pathlib.Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env["HOME"] = str(tmp_path)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    added = _run(
        "backend", "add", "gpu-1", "--url", "http://10.0.0.5:11434", "--type", "ollama", env=env
    )
    assert added.returncode == 0, added.stderr
    listed = json.loads(_run("backend", "list", "-o", "json", env=env).stdout)
    assert [(b["name"], b["generation"]) for b in listed] == [("gpu-1", 1)]
    assert (tmp_path / "data" / "llmctl" / "llmctl.db").is_file()


def test_the_console_script_needs_an_upgraded_postgres_and_says_how(postgres_url: str) -> None:
    env = {**os.environ, "LLMCTL_DATABASE_URL": postgres_url}
    refused = _run("backend", "list", env=env)
    assert refused.returncode == 2
    assert "run: llmctl db upgrade" in refused.stderr
    upgraded = _run("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database at revision" in upgraded.stdout
    assert _run("backend", "list", "-o", "json", env=env).stdout.strip() == "[]"


def test_an_unreachable_database_exits_1_without_showing_the_password() -> None:
    env = {**os.environ, "LLMCTL_DATABASE_URL": "postgresql://llmctl:hunter2@127.0.0.1:1/llmctl"}
    result = _run("backend", "list", env=env)
    assert result.returncode == 1
    assert "cannot use the database" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_db_current_on_an_unreachable_database_exits_1_in_one_line_without_a_traceback() -> None:
    env = {**os.environ, "LLMCTL_DATABASE_URL": "postgresql://llmctl:hunter2@127.0.0.1:1/llmctl"}
    result = _run("db", "current", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: cannot use the database at postgresql://llmctl:***@127.0.0.1:1/llmctl: "
        'connection failed: connection to server at "127.0.0.1", port 1 failed: '
        "Connection refused"
    ]


def test_apply_from_a_closed_standard_input_exits_2_and_says_to_pipe_the_file(
    tmp_path: pathlib.Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env["LLMCTL_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(  # stdin closed, as `llmctl apply -f - <&-` leaves it
        [LLMCTL, "apply", "-f", "-"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert result.returncode == 2, result.stderr
    assert "standard input is closed" in result.stderr
    assert "Traceback" not in result.stderr
