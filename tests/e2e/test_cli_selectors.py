"""Label selectors (``-l/--selector``) on the lists, as a user types them, on SQLite and Postgres."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli, dump

FLEET = {
    "gpu-a1": ("zone=a", "gpu=h100"),
    "gpu-a2": ("zone=a", "gpu=t4", "draining=yes"),
    "gpu-b1": ("zone=b", "gpu=a100"),
    "cpu-1": (),
}


def _declare(llmctl: Cli) -> None:
    for name, labels in FLEET.items():
        flags = [arg for label in labels for arg in ("--label", label)]
        added = llmctl(
            "backend", "add", name, "--url", f"http://{name}:11434", "--type", "ollama", *flags
        )
        assert added.code == 0, added.err


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("zone=a", ["gpu-a1", "gpu-a2"]),
        ("zone==b", ["gpu-b1"]),
        ("zone!=a", ["cpu-1", "gpu-b1"]),  # as in Kubernetes: no zone at all is not zone a
        ("gpu in (h100,a100)", ["gpu-a1", "gpu-b1"]),
        ("gpu notin (h100, a100)", ["cpu-1", "gpu-a2"]),
        ("draining", ["gpu-a2"]),
        ("!draining", ["cpu-1", "gpu-a1", "gpu-b1"]),
        ("zone=a,!draining", ["gpu-a1"]),
        ("zone=a, gpu in (t4)", ["gpu-a2"]),
        ("zone=c", []),
        ("", ["cpu-1", "gpu-a1", "gpu-a2", "gpu-b1"]),
    ],
)
def test_backend_list_keeps_the_backends_whose_labels_match_every_operator(
    llmctl: Cli, selector: str, expected: list[str]
) -> None:
    _declare(llmctl)
    listed = llmctl("backend", "list", "-l", selector, "-o", "json")
    assert listed.code == 0, listed.err
    assert sorted(b["name"] for b in listed.json()) == expected
    table = llmctl("backend", "list", "--selector", selector)
    assert table.code == 0, table.err
    words = [line.split()[0] for line in table.out.splitlines() if line.strip()]
    assert "NAME" in words  # the table is printed, with its header, even when empty
    assert {w for w in words if w in FLEET} == set(expected)


@pytest.mark.parametrize(
    ("selector", "position", "expected"),
    [
        ("zone=a,,gpu", 8, "expected a label key"),
        ("gpu in h100", 8, "expected ( opening the list of values"),
        ("zone=a gpu=b", 8, "expected a comma between requirements"),
        ("zone=a;", 7, "unexpected character ';'"),
        ("gpu in (h100", 13, "expected , or ) closing the list of values"),
    ],
)
def test_an_invalid_selector_exits_2_naming_the_position_and_prints_nothing(
    llmctl: Cli, database_url: str, selector: str, position: int, expected: str
) -> None:
    _declare(llmctl)
    before = dump(database_url)
    for command in (
        ("backend", "list"),
        ("downloads", "list"),
        ("export",),
        ("resolve", "llama3"),
        ("reconcile", "--once"),
    ):
        flag = "--selector" if command[0] == "resolve" else "-l"
        result = llmctl(*command, flag, selector)
        assert result.code == 2, (command, result.out, result.err)
        assert result.out == ""
        assert f"at position {position} " in result.err
        assert expected in result.err
        assert result.err.startswith("error: selector: ")
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert "Traceback" not in result.err and "Usage:" not in result.err
    assert dump(database_url) == before
