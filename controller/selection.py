"""The ``-l/--selector`` option of the CLI: a label selector typed by the user, parsed once.

Used by ``backend list``, ``downloads list``, ``reconcile --once``, ``resolve --selector`` and
``export -l``. The option is a plain string so that click never sees it as invalid: the command
parses it with `selected` before it opens the database, so a selector that does not parse
exits 2 with the parser's one line (naming the position) and nothing is read or written. The
matching itself is `runtimestate.desired.selectors`; this module must not read the database.
"""

from __future__ import annotations

from typing import Annotated

import typer

from controller import runner
from runtimestate.desired import selectors

HELP = "Label selector: zone=a, zone!=a, gpu in (h100,a100), gpu notin (t4), draining, !draining"

SelectorOpt = Annotated[
    str | None,
    typer.Option("--selector", "-l", help=f"{HELP}; a comma means and", show_default=False),
]


def selected(env: runner.Env, text: str | None) -> selectors.Selector:
    """The selector ``text`` describes (none: every object); exits 2 naming the position of
    the first thing that does not parse. Reads and writes nothing."""
    if text is None:
        return selectors.EVERYTHING
    try:
        return selectors.parse(text)
    except selectors.SelectorError as exc:
        env.fail(str(exc))


def none_matched(selector: selectors.Selector, kind: str) -> str:
    """The note printed (on standard error) when a selector matches no object of ``kind``."""
    return f"no {kind} matches the selector {selector}"
