"""What a live list counts as a change, and how each version is placed on the screen."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console

from controller import livelist, output


def test_a_change_of_only_volatile_fields_is_no_change() -> None:
    volatile = (("status", "lastOkAt"),)
    before = [{"name": "gpu-0", "status": {"phase": "Ready", "lastOkAt": "10:00"}}]
    later = [{"name": "gpu-0", "status": {"phase": "Ready", "lastOkAt": "10:01"}}]
    worse = [{"name": "gpu-0", "status": {"phase": "Degraded", "lastOkAt": "10:00"}}]
    key = livelist.change_key(before, volatile)
    assert livelist.change_key(later, volatile) == key
    assert livelist.change_key(worse, volatile) != key
    assert livelist.change_key([{"name": "gpu-0", "status": None}], volatile) != key


def _screen(height: int, *, in_place: bool) -> tuple[livelist.Screen, io.StringIO]:
    written = io.StringIO()
    console = Console(file=written, width=80, height=height, force_terminal=in_place)

    def render(docs: Sequence[livelist.Doc], fmt: output.Format, out: Console) -> None:
        for doc in docs:
            out.out(doc["name"], highlight=False)

    return livelist.Screen(console, output.Format.TABLE, render, in_place=in_place), written


def test_a_terminal_redraw_moves_the_cursor_back_over_exactly_the_last_table() -> None:
    screen, written = _screen(10, in_place=True)
    screen.show([{"name": "a"}, {"name": "b"}])
    screen.show([{"name": "c"}])
    assert written.getvalue() == "a\nb\n\x1b[2A\r\x1b[Jc\n"


def test_a_table_taller_than_the_terminal_is_redrawn_from_the_top_of_a_cleared_screen() -> None:
    screen, written = _screen(3, in_place=True)
    screen.show([{"name": n} for n in "abcd"])
    screen.show([{"name": "e"}])
    assert written.getvalue().endswith("d\n\x1b[H\x1b[2Je\n")


def test_off_a_terminal_each_table_follows_the_last_after_a_blank_line() -> None:
    screen, written = _screen(3, in_place=False)
    screen.show([{"name": "a"}])
    screen.show([{"name": "b"}])
    assert written.getvalue() == "a\n\nb\n"
