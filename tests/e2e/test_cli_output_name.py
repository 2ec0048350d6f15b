"""``-o name``: every list and get prints ``kind/name`` a line, as kubectl does, and nothing else."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli
from tests.e2e.test_cli_downloads import enqueue


def _seed(llmctl: Cli) -> None:
    for name in ("gpu-2", "gpu-1"):
        added = llmctl("backend", "add", name, "--url", "http://h:1", "--type", "ollama")
        assert added.code == 0, added.err
    assert llmctl("model", "add", "llama3").code == 0
    assert llmctl("pool", "create", "chat").code == 0


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (("backend", "list"), ["backend/gpu-1", "backend/gpu-2"]),
        (("model", "list"), ["model/llama3"]),
        (("pool", "list"), ["pool/chat", "pool/default"]),
        (("backend", "get", "gpu-2"), ["backend/gpu-2"]),
        (("model", "get", "llama3:latest"), ["model/llama3"]),
        (("pool", "get", "chat"), ["pool/chat"]),
    ],
)
def test_o_name_prints_kind_slash_name_a_line(
    llmctl: Cli, args: tuple[str, ...], lines: list[str]
) -> None:
    _seed(llmctl)
    result = llmctl(*args, "-o", "name")
    assert result.code == 0, result.err
    assert result.out.splitlines() == lines


def test_o_name_of_downloads_prints_download_slash_id(llmctl: Cli, database_url: str) -> None:
    first = enqueue(database_url, "gpu-1", "llama3")
    second = enqueue(database_url, "gpu-2", "qwen2:0.5b")
    listed = llmctl("downloads", "list", "-o", "name")
    assert listed.code == 0, listed.err
    assert listed.out.splitlines() == [f"download/{first.id}", f"download/{second.id}"]
    got = llmctl("downloads", "get", second.id, "-o", "name")
    assert got.code == 0, got.err
    assert got.out == f"download/{second.id}\n"


def test_o_name_of_an_empty_list_prints_nothing(llmctl: Cli) -> None:
    for args in (("backend", "list"), ("model", "list"), ("downloads", "list")):
        result = llmctl(*args, "-o", "name")
        assert (result.code, result.out) == (0, ""), args
