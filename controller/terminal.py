"""Whether output may carry colour: only to a terminal, and never when ``NO_COLOR`` is set.

The convention of https://no-color.org: ``NO_COLOR`` set to any non-empty value turns every
ANSI style off (colour, and bold too), wherever llmctl writes; output that is not a terminal
(a pipe, a file) is plain anyway. Called where output is set up: the consoles of
`controller.runner`, the log renderers of `controller.runner` and `controller.logs`, and typer's
help and usage errors (`controller.usage`). Reads the environment only; imports nothing of ours.
"""

from __future__ import annotations

import os
from typing import Literal, TextIO

NO_COLOR = "NO_COLOR"


def no_color() -> bool:
    """Whether the user asked for no colour (``NO_COLOR`` set and not empty)."""
    return bool(os.environ.get(NO_COLOR))


def styled(stream: TextIO | None) -> bool:
    """Whether text written to ``stream`` may carry ANSI styles: a terminal, no ``NO_COLOR``."""
    return not no_color() and stream is not None and stream.isatty()


def color_system() -> Literal["auto"] | None:
    """rich's ``color_system`` for a console: ``None`` (no style at all, bold included; rich's
    own ``NO_COLOR`` handling keeps bold) under ``NO_COLOR``, else rich's detection, which
    styles terminals only."""
    return None if no_color() else "auto"
