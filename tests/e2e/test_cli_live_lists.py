"""``backend list --watch`` and ``downloads list --watch`` as an operator runs them: a child
process on a pseudo-terminal or a pipe, following real cycles run against an Ollama emulator."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest

from emulators import ollama
from tests.e2e.conftest import Cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = "from controller.cli import main; main()"  # the CLI as its console script runs it
WAIT_S = 30.0  # a deadline for what should take a second; the machine may be busy
CURSOR_UP = re.compile(r"\x1b\[(\d+)A\r\x1b\[J")


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """These tests follow a child process: SQLite alone keeps them quick (the reads are the
    plain list's, run on both databases by the list tests)."""
    return sqlite_url


@dataclasses.dataclass
class Watch:
    proc: subprocess.Popen[bytes]
    out_fd: int
    err_path: pathlib.Path
    seen: str = ""

    def until(self, found: Callable[[str], bool], what: str) -> str:
        """Read standard output until ``found(everything so far)``; fail after `WAIT_S`."""
        deadline = time.monotonic() + WAIT_S
        while not found(self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {WAIT_S} s; output so far:\n{self.seen}"
            ready, _, _ = select.select([self.out_fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.out_fd, 65536)
                except OSError:  # the terminal closed: the process ended
                    chunk = b""
                assert chunk, f"the watch ended before {what}:\n{self.seen}\n{self.err()}"
                self.seen += chunk.decode(errors="replace")
        return self.seen

    def err(self) -> str:
        return self.err_path.read_text()

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(WAIT_S)


def _environ(data_dir: pathlib.Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    environ["LLMCTL_DATA_DIR"] = str(data_dir)  # no serve announced there: no NATS found
    environ["COLUMNS"] = "160"
    return environ


@pytest.fixture
def spawn(tmp_path: pathlib.Path) -> Iterator[Callable[..., Watch]]:
    """Start ``llmctl ARGS`` with stdout on a pseudo-terminal (``tty=True``) or a pipe."""
    started: list[Watch] = []

    def start(*args: str, tty: bool) -> Watch:
        err_path = tmp_path / f"stderr-{len(started)}.txt"
        if tty:
            reader, writer = pty.openpty()
            fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        else:
            reader, writer = os.pipe()
        with err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", SCRIPT, *args],
                stdin=subprocess.DEVNULL,
                stdout=writer,
                stderr=err,
                cwd=ROOT,
                env=_environ(tmp_path),
            )
        os.close(writer)
        watch = Watch(proc, reader, err_path)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()
        os.close(watch.out_fd)


def _declare(llmctl: Cli, url: str, *models: str) -> None:
    assert llmctl("backend", "add", "gpu-0", "--url", url, "--type", "ollama").code == 0
    for model in models:
        assert llmctl("model", "add", model).code == 0


def test_backend_list_watch_redraws_the_table_in_place_when_a_cycle_changes_the_status(
    llmctl: Cli, database_url: str, nats_url: str, nats_prefix: str, spawn: Callable[..., Watch]
) -> None:
    nats = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    with ollama.in_thread(installed=["qwen2:0.5b"]) as emu:
        _declare(llmctl, emu.node_url(0), "qwen2:0.5b")
        watch = spawn("--database-url", database_url, *nats, "backend", "list", "--watch", tty=True)
        first = watch.until(lambda s: "Unknown" in s, "first table")
        assert "gpu-0" in first
        assert CURSOR_UP.search(first) is None

        assert llmctl(*nats, "reconcile", "--once").code == 0

        seen = watch.until(lambda s: "Ready" in s, "redraw after the cycle")
        moved = CURSOR_UP.search(seen)
        assert moved is not None, "the table was printed again below, not redrawn in place"
        first_table = seen[: moved.start()]
        assert int(moved.group(1)) == first_table.count("\n")  # exactly over the first table
        redrawn = seen[moved.end() :]
        assert "1/1" in redrawn
        assert "Unknown" not in redrawn
        assert watch.interrupt() == 0
    assert "Traceback" not in watch.err()
    assert "polling" not in watch.err()  # it followed NATS


def test_backend_list_watch_without_nats_polls_the_database_and_says_so_once(
    llmctl: Cli, database_url: str, spawn: Callable[..., Watch]
) -> None:
    _declare(llmctl, "http://127.0.0.1:9")
    watch = spawn("--database-url", database_url, "backend", "list", "-w", tty=False)
    watch.until(lambda s: "gpu-0" in s, "first table")

    assert (
        llmctl("backend", "add", "gpu-1", "--url", "http://127.0.0.1:9", "--type", "vllm").code == 0
    )

    seen = watch.until(lambda s: "gpu-1" in s, "the new backend")
    first, second = seen.split("\n\n", 1)  # on a pipe: whole tables, a blank line between
    assert "gpu-1" not in first
    assert "gpu-0" in second
    assert "\x1b[" not in seen
    assert watch.interrupt() == 0
    err = watch.err()
    assert err.count("polling the database every 1s") == 1
    assert "no NATS to follow" in err
    assert "Traceback" not in err


def test_backend_list_watch_polls_when_nats_cannot_be_reached(
    llmctl: Cli, database_url: str, spawn: Callable[..., Watch]
) -> None:
    _declare(llmctl, "http://127.0.0.1:9")
    args = ("--database-url", database_url, "--nats-url", "nats://127.0.0.1:1")
    watch = spawn(*args, "backend", "list", "-w", "-o", "json", tty=False)
    watch.until(lambda s: s.count("\n") >= 1, "first document")
    assert llmctl("backend", "delete", "gpu-0").code == 0
    seen = watch.until(lambda s: s.count("\n") >= 2, "second document")
    lines = seen.splitlines()
    assert [doc["name"] for doc in json.loads(lines[0])] == ["gpu-0"]
    assert json.loads(lines[1]) == []
    assert watch.interrupt() == 0
    assert "cannot reach NATS at nats://127.0.0.1:1" in watch.err()


def test_downloads_list_watch_prints_a_json_line_when_a_cycle_queues_a_download(
    llmctl: Cli, database_url: str, nats_url: str, nats_prefix: str, spawn: Callable[..., Watch]
) -> None:
    nats = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    with ollama.in_thread(installed=[]) as emu:
        _declare(llmctl, emu.node_url(0), "qwen2:0.5b")
        args = ("--database-url", database_url, *nats, "downloads", "list", "--watch")
        watch = spawn(*args, "-o", "json", tty=False)
        watch.until(lambda s: s.count("\n") >= 1, "first document")

        assert llmctl(*nats, "reconcile", "--once").code == 0

        seen = watch.until(lambda s: s.count("\n") >= 2, "the queued download")
        first, second = seen.splitlines()[:2]
        assert json.loads(first) == []
        [job] = json.loads(second)
        assert (job["backend"], job["model"], job["state"]) == ("gpu-0", "qwen2:0.5b", "queued")
        assert watch.interrupt() == 0
    assert "polling" not in watch.err()


def test_watch_with_an_invalid_subject_prefix_exits_2_before_showing_anything(
    llmctl: Cli,
) -> None:
    result = llmctl("--subject-prefix", "a b", "backend", "list", "--watch")
    assert result.code == 2
    assert "--subject-prefix" in result.err
    assert result.out == ""
