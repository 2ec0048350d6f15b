"""No module of the packages grows past 400 lines without saying why on its first line.

STYLE.md keeps files under ~400 lines, split along the seams they have (issue 14, item 8); a
module that must stay longer opens with ``# Over 400 lines: <the reason>``, above its docstring.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = (
    "controller",
    "gateway",
    "runtimestate",
    "dwqueue",
    "emulators",
    "nodeagent",
    "migrations",
)
LIMIT = 400
REASON = "# Over 400 lines: "


def oversized(root: pathlib.Path, packages: Iterable[str]) -> set[str]:
    """The modules under ``root``'s ``packages`` over `LIMIT` lines whose first line gives no
    reason, as paths relative to ``root``."""
    found: set[str] = set()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            says_why = bool(lines) and lines[0].startswith(REASON) and bool(lines[0][len(REASON) :])
            if len(lines) > LIMIT and not says_why:
                found.add(path.relative_to(root).as_posix())
    return found


def test_no_module_of_the_packages_is_over_400_lines_without_a_reason_on_its_first_line() -> None:
    found = oversized(ROOT, PACKAGES)
    assert not found, (
        f"over {LIMIT} lines: {sorted(found)}; split each along its seams, or open it with "
        f"'{REASON}<why>'"
    )


def test_a_long_module_passes_only_with_a_reason_on_its_first_line(tmp_path: pathlib.Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = '"""A module."""\n' + "x = 1\n" * LIMIT
    (package / "short.py").write_text("x = 1\n" * LIMIT)
    (package / "silent.py").write_text(body)
    (package / "empty_reason.py").write_text(REASON + "\n" + body)
    (package / "reason_below.py").write_text(body + REASON + "one table of cases\n")
    (package / "explained.py").write_text(REASON + "one table of cases\n" + body)
    assert oversized(tmp_path, ["pkg"]) == {
        "pkg/silent.py",
        "pkg/empty_reason.py",
        "pkg/reason_below.py",
    }
