"""Module size: a module of the backend-cycle and desired-state wings stays under 400 lines, or
says at the very top of its docstring, in one line, why it is longer (issue 14, item 8)."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIMIT = 400
REASON = "Longer than 400 lines: "
WINGS = ("runtimestate/reconcile", "runtimestate/desired")
MODULES = sorted(path for wing in WINGS for path in (ROOT / wing).glob("*.py"))


def test_the_wings_have_modules_to_check() -> None:
    assert {path.parent.name for path in MODULES} == {"reconcile", "desired"}
    assert len(MODULES) > 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_module_over_400_lines_says_why_in_the_first_line_of_its_docstring(
    path: pathlib.Path,
) -> None:
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    if lines <= LIMIT:
        return
    docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
    first = docstring.splitlines()[0] if docstring else ""
    assert re.fullmatch(rf"{REASON}\S.{{10,}}", first), (
        f"{path.relative_to(ROOT)} has {lines} lines: split it along its seams, or open its "
        f"docstring with one line {REASON!r}<why>"
    )
