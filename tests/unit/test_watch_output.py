"""What ``llmctl watch`` draws on a terminal: notes never land on a progress bar's line."""

from __future__ import annotations

import datetime as dt
import io
import re

from rich.console import Console

from controller import watchview
from dwqueue import events, jobs

_CONTROL = re.compile(r"\x1b\[\?25[lh]")  # cursor hide/show


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: CR returns to column 0, ESC[2K erases the line."""
    lines: list[str] = []
    current = ""
    for token in re.split(r"(\r|\n|\x1b\[2K)", _CONTROL.sub("", raw)):
        if token == "\n":
            lines.append(current)
            current = ""
        elif token == "\x1b[2K":
            current = ""
        elif token != "\r":
            current += token  # the bars always redraw whole lines after a CR
    return [*lines, current] if current else lines


def test_a_note_is_printed_on_a_line_of_its_own_above_the_progress_bars() -> None:
    terminal = io.StringIO()  # stdout and stderr are one terminal
    out = Console(file=terminal, force_terminal=True, width=120, color_system=None)
    err = Console(file=terminal, force_terminal=True, width=120, color_system=None)
    bars = watchview.Bars(out, dt.datetime.now(dt.UTC), err)
    bars.start()
    now = dt.datetime.now(dt.UTC)
    bars.show(
        events.DownloadProgressed(
            job_id=jobs.JobId(jobs.new_job_id(now)),
            backend="gpu-1",
            model="llama3",
            seq=2,
            at=now,
            max_attempts=5,
            status="pulling 6a0746a1ec1a",
            completed=500,
            total=1000,
            percent=50.0,
            rate_bps=1e6,
            eta_s=5.0,
            attempt=1,
        )
    )
    bars.progress.refresh()  # the bar is on screen, the cursor at the end of its line
    bars.note("note: NATS disconnected; reconnecting")
    bars.stop()
    screen = _screen(terminal.getvalue())
    assert "note: NATS disconnected; reconnecting" in screen, screen
    (bar,) = {line for line in screen if line.startswith("llama3")}
    assert bar.rstrip().endswith("pulling 6a0746a1ec1a")


def test_a_note_goes_to_standard_error_when_no_bars_are_on_a_terminal() -> None:
    out, err = io.StringIO(), io.StringIO()
    bars = watchview.Bars(Console(file=out), dt.datetime.now(dt.UTC), Console(file=err))
    bars.start()
    bars.note("note: NATS reconnected (nats://127.0.0.1:4222)")
    bars.stop()
    assert err.getvalue() == "note: NATS reconnected (nats://127.0.0.1:4222)\n"
    assert "note:" not in out.getvalue()
