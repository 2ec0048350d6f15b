"""How ``llmctl watch`` shows download events: a rich progress bar per job, or JSON lines.

`Bars` draws one bar per job (model, backend, percent, rate, ETA, phase; a finished job keeps its
final state; a job that had finished before the watch began is not shown) and prints notes on a
line of their own above the bars; `JsonLines` writes each event's wire JSON on its own line,
flushed at once, and notes on standard error. Both are a `Sink`, which `controller.watch` feeds
the events it keeps. Output only: no NATS, no database, no decision about which event is newer.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.text import Text

from controller import downloadview
from dwqueue import events


def phase(event: events.DownloadEvent) -> str:
    """What a job is doing, in words: Ollama's status while pulling, else its state."""
    reason = f": {event.error}" if event.error else ""
    if isinstance(event, events.DownloadRetrying):
        return f"retrying (attempt {event.attempt}/{event.max_attempts}){reason}"
    if isinstance(event, events.DownloadFailed | events.DownloadCancelled):
        return f"{event.TYPE}{reason}"
    if isinstance(event, events.DownloadStarted | events.DownloadProgressed):
        return event.status or "started"
    return event.TYPE


class Sink(Protocol):
    """Where the watch's events and notes go, between `start` and `stop`."""

    def start(self) -> None: ...

    def show(self, event: events.DownloadEvent) -> None: ...

    def note(self, text: str) -> None: ...

    def stop(self) -> None: ...


class JsonLines:
    """One event's wire JSON per line on stdout, flushed at once."""

    def start(self) -> None:
        pass

    def show(self, event: events.DownloadEvent) -> None:
        sys.stdout.write(event.to_wire().decode() + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def stop(self) -> None:
        pass


class _Field(ProgressColumn):
    """A text column from one of the task's fields, styled by the task's ``style`` field."""

    def __init__(self, name: str, width: int | None = None, right: bool = False) -> None:
        super().__init__()
        self._name, self._width, self._right = name, width, right

    def render(self, task: Task) -> Text:
        text = Text(str(task.fields.get(self._name, "")), style=task.fields.get("style", ""))
        if self._width is not None:
            text.align("right" if self._right else "left", self._width)
        return text


_STYLES = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "retrying": "yellow"}


class Bars:
    """One rich progress bar per job, on screen between `start` and `stop`."""

    def __init__(self, console: Console, started_at: dt.datetime, err: Console) -> None:
        self.progress = Progress(
            _Field("model"),
            _Field("backend"),
            BarColumn(),
            _Field("percent", 6, right=True),
            _Field("rate", 11, right=True),
            _Field("eta", 6, right=True),
            _Field("phase"),
            console=console,
            refresh_per_second=4,
        )
        self.tasks: dict[str, TaskID] = {}
        self._started_at = started_at
        self._err = err

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        """On a terminal showing the bars, a line of its own above them (printed on standard
        error it would land at the end of a bar's line); else on standard error."""
        if self.progress.live.is_started and self.progress.console.is_terminal:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self._err.print(text, markup=False, highlight=False)

    def show(self, event: events.DownloadEvent) -> None:
        task = self.tasks.get(event.job_id)
        if task is None:
            if event.TERMINAL and event.at < self._started_at:
                return  # history: `llmctl downloads list` shows it
            task = self.progress.add_task(event.model)
            self.tasks[event.job_id] = task
        running = isinstance(event, events.DownloadStarted | events.DownloadProgressed)
        total = event.total or 1
        done = isinstance(event, events.DownloadSucceeded)
        self.progress.update(
            task,
            total=None if running and not event.total else total,
            completed=total if done else (event.completed or 0),
            model=event.model,
            backend=event.backend,
            percent="100.0%" if done else downloadview.percent_text(event.percent),
            rate=downloadview.rate_text(event.rate_bps) if running else "",
            eta=downloadview.eta_text(event.eta_s) if running else "",
            phase=phase(event),
            style=_STYLES.get(event.TYPE, ""),
        )
