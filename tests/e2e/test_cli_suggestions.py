"""Did you mean: a name that is not found but one edit away from a stored one is suggested."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli, dump


def _seed(llmctl: Cli) -> None:
    for name in ("gpu-1", "gpu-2", "edge"):
        added = llmctl("backend", "add", name, "--url", "http://h:1", "--type", "ollama")
        assert added.code == 0, added.err
    assert llmctl("model", "add", "llama3").code == 0
    assert llmctl("model", "add", "qwen2:0.5b").code == 0
    assert llmctl("pool", "create", "chat").code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("backend", "get", "gpuu-1"), "backend 'gpuu-1' does not exist; did you mean 'gpu-1'?"),
        (("backend", "delete", "egde"), "backend 'egde' does not exist; did you mean 'edge'?"),
        (
            ("backend", "update", "gpu1", "--max-pulls", "2"),
            "backend 'gpu1' does not exist; did you mean 'gpu-1'?",
        ),
        (("model", "get", "llama2"), "model 'llama2' does not exist; did you mean 'llama3'?"),
        (
            ("model", "delete", "Qwen2:0.6b"),
            "model 'Qwen2:0.6b' does not exist; did you mean 'qwen2:0.5b'?",
        ),
        (("pool", "get", "caht"), "pool 'caht' does not exist; did you mean 'chat'?"),
        (("pool", "delete", "chats"), "pool 'chats' does not exist; did you mean 'chat'?"),
        (
            ("pool", "add-backend", "chat", "edg"),
            "backend 'edg' does not exist; did you mean 'edge'?",
        ),
        (
            ("pool", "add-model", "chat", "lama3"),
            "model 'lama3' does not exist; did you mean 'llama3'?",
        ),
        (
            ("model", "add", "mistral", "--pool", "chta"),
            "pool 'chta' does not exist; did you mean 'chat'?",
        ),
    ],
)
def test_a_name_one_edit_from_a_stored_one_is_suggested(
    llmctl: Cli, database_url: str, args: tuple[str, ...], message: str
) -> None:
    _seed(llmctl)
    before = dump(database_url)
    result = llmctl(*args)
    assert result.code == 2, result.out
    assert result.err.strip() == f"error: {message}"
    assert dump(database_url) == before


def test_every_name_equally_close_is_suggested(llmctl: Cli) -> None:
    _seed(llmctl)
    result = llmctl("backend", "get", "gpu-3")
    assert result.code == 2
    assert "did you mean 'gpu-1' or 'gpu-2'?" in result.err


def test_a_name_far_from_every_stored_one_points_to_the_list(llmctl: Cli) -> None:
    _seed(llmctl)
    result = llmctl("backend", "delete", "storage")
    assert result.code == 2
    assert result.err.strip() == "error: backend 'storage' does not exist; see llmctl backend list"
