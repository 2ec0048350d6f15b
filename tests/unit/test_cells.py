"""Table cells of the plain views: nothing as ``-``, lists and maps readable, never Python."""

from __future__ import annotations

from controller import output


def test_a_map_in_a_cell_shows_its_lists_and_booleans_as_files_write_them() -> None:
    cell = output.cell({"maxModelLen": 4096, "enableLora": True, "extraArgs": ["--a", "--b"]})
    assert cell == "maxModelLen=4096,enableLora=true,extraArgs=--a --b"


def test_nothing_is_a_dash_and_a_list_is_comma_joined() -> None:
    assert output.cell(None) == "-"
    assert output.cell([]) == "-"
    assert output.cell({}) == "-"
    assert output.cell(["default", "gpu"]) == "default,gpu"
