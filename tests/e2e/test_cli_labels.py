"""Labels on models and pools, as on backends: set, shown, selected with ``-l``, exported."""

from __future__ import annotations

import pathlib
import re

import pytest
from typer.testing import CliRunner

from controller import cli
from tests.e2e.conftest import Cli, dump


def _names(llmctl: Cli, kind: str, *args: str) -> list[str]:
    result = llmctl(kind, "list", "-o", "json", *args)
    assert result.code == 0, result.err
    return [doc["name"] for doc in result.json()]


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip() and "─" not in line]


def test_model_labels_set_on_add_are_shown_by_get_json_and_the_wide_list(llmctl: Cli) -> None:
    added = llmctl("model", "add", "llama3", "--label", "tier=big", "--label", "family=llama")
    assert added.code == 0, added.err
    doc = llmctl("model", "get", "llama3", "-o", "json").json()
    assert list(doc["labels"].items()) == [("family", "llama"), ("tier", "big")]
    assert re.search(
        r"^labels: +family=llama,tier=big$", llmctl("model", "get", "llama3").out, re.M
    )
    header, row = _rows(llmctl("model", "list", "-o", "wide").out)
    assert header[-2:] == ["LABELS", "AGE"]
    assert row[header.index("LABELS")] == "family=llama,tier=big"
    assert "LABELS" not in llmctl("model", "list").out
    assert llmctl("model", "list", "-o", "yaml").out.count("tier: big") == 1


def test_model_update_label_sets_and_k_minus_removes_leaving_the_generation_alone(
    llmctl: Cli,
) -> None:
    llmctl("model", "add", "llama3", "--label", "tier=big", "--label", "old=yes")
    before = llmctl("model", "get", "llama3", "-o", "json").json()
    updated = llmctl("model", "update", "llama3", "--label", "old-", "--label", "tier=small")
    assert updated.out.strip() == "model/llama3 updated"
    doc = llmctl("model", "get", "llama3", "-o", "json").json()
    # A model's labels are metadata: its generation keys its downloads, a relabel is no edit.
    assert (doc["labels"], doc["generation"]) == ({"tier": "small"}, 1)
    assert doc["updatedAt"] > before["updatedAt"]
    same = llmctl("model", "update", "llama3", "--label", "tier=small")
    assert same.out.strip() == "model/llama3 unchanged"
    assert llmctl("model", "update", "llama3", "--context-length", "4096").code == 0
    assert llmctl("model", "get", "llama3", "-o", "json").json()["generation"] == 2


def test_pool_labels_on_create_and_update_are_shown_and_bump_the_generation(
    llmctl: Cli,
) -> None:
    assert llmctl("pool", "create", "chat", "--purpose", "chat", "--label", "zone=eu").code == 0
    doc = llmctl("pool", "get", "chat", "-o", "json").json()
    assert (doc["labels"], doc["generation"]) == ({"zone": "eu"}, 1)
    assert "zone=eu" in llmctl("pool", "get", "chat").out
    updated = llmctl("pool", "update", "chat", "--label", "zone-", "--label", "team=ml")
    assert updated.out.strip() == "pool/chat updated"
    doc = llmctl("pool", "get", "chat", "-o", "json").json()
    assert (doc["labels"], doc["generation"]) == ({"team": "ml"}, 2)
    assert llmctl("pool", "update", "chat", "--label", "team=ml").out.strip() == (
        "pool/chat unchanged"
    )
    header, row = _rows(llmctl("pool", "list", "-o", "wide", "-l", "team").out)
    assert row[header.index("LABELS")] == "team=ml"


def test_model_list_l_lists_only_the_models_whose_labels_match(llmctl: Cli) -> None:
    llmctl("model", "add", "llama3", "--label", "tier=big", "--label", "gpu=h100")
    llmctl("model", "add", "qwen2", "--label", "tier=small")
    llmctl("model", "add", "phi3")
    assert _names(llmctl, "model", "-l", "tier=big") == ["llama3"]
    assert _names(llmctl, "model", "-l", "tier!=big") == ["phi3", "qwen2"]
    assert _names(llmctl, "model", "-l", "tier in (big,small)") == ["llama3", "qwen2"]
    assert _names(llmctl, "model", "-l", "tier notin (big)") == ["phi3", "qwen2"]
    assert _names(llmctl, "model", "--selector", "!tier") == ["phi3"]
    assert _names(llmctl, "model", "-l", "tier,gpu=h100") == ["llama3"]
    assert _names(llmctl, "model", "-l", "tier=none") == []
    table = llmctl("model", "list", "-l", "tier=small").out
    assert [row[0] for row in _rows(table)] == ["NAME", "qwen2"]


def test_pool_list_l_lists_only_the_pools_whose_labels_match(llmctl: Cli) -> None:
    llmctl("pool", "create", "chat", "--label", "zone=eu")
    llmctl("pool", "create", "batch", "--label", "zone=us")
    assert _names(llmctl, "pool", "-l", "zone=eu") == ["chat"]
    assert _names(llmctl, "pool", "-l", "zone") == ["batch", "chat"]
    assert _names(llmctl, "pool", "-l", "!zone") == ["default"]


@pytest.mark.parametrize("kind", ["model", "pool"])
def test_a_selector_that_does_not_parse_exits_2_naming_the_position_before_any_read(
    kind: str,
) -> None:
    # No server listens on port 1: a command that opened the database would fail otherwise.
    result = CliRunner().invoke(
        cli.app,
        ["--database-url", "postgresql://127.0.0.1:1/none", kind, "list", "-l", "zone in (a"],
    )
    assert result.exit_code == 2, result.output
    assert "selector: expected" in result.stderr
    assert "at position 11 of 'zone in (a'" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("model", "add", "qwen2", "--label", "Bad Key=1"), "key 'Bad Key' is not a valid"),
        (("model", "add", "qwen2", "--label", "tier"), "'tier' is not of the form key=value"),
        (("model", "update", "llama3", "--label", "tier=a b"), "value 'a b' of 'tier'"),
        (("pool", "create", "batch", "--label=-x=1"), "key '-x' is not a valid label key"),
        (("pool", "update", "chat", "--label", "zone=é"), "value 'é' of 'zone'"),
    ],
)
def test_an_invalid_label_exits_2_naming_it_and_writes_nothing(
    llmctl: Cli, database_url: str, args: tuple[str, ...], message: str
) -> None:
    llmctl("model", "add", "llama3")
    llmctl("pool", "create", "chat")
    before = dump(database_url)
    result = llmctl(*args)
    assert result.code == 2, result.out
    assert f"labels: {message}" in result.err, result.err
    assert dump(database_url) == before


LABELLED = """
apiVersion: llmctl/v1
kind: Model
metadata: {name: llama3, labels: {tier: big}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "qwen2:0.5b"}
spec: {contextLength: 8192}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat, labels: {zone: eu, team: ml}}
spec: {purpose: chat, models: [llama3]}
"""


def test_labels_of_models_and_pools_round_trip_through_export_and_apply(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(LABELLED)
    assert llmctl("apply", "-f", str(path)).code == 0
    assert llmctl("model", "get", "llama3", "-o", "json").json()["labels"] == {"tier": "big"}
    assert llmctl("pool", "get", "chat", "-o", "json").json()["labels"] == {
        "team": "ml",
        "zone": "eu",
    }
    exported = llmctl("export").out
    assert "labels:\n    tier: big" in exported
    assert "labels:\n    team: ml\n    zone: eu" in exported
    again = llmctl("apply", "-f", "-", input=exported)
    assert again.code == 0, again.err
    assert {line.split()[1] for line in again.out.splitlines()} == {"unchanged"}
    assert llmctl("export").out == exported


def test_applying_new_labels_changes_only_the_labels_and_the_pools_generation(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(LABELLED)
    llmctl("apply", "-f", str(path))
    path.write_text(LABELLED.replace("tier: big", "tier: small").replace(", team: ml", ""))
    result = llmctl("apply", "-f", str(path))
    assert result.code == 0, result.err
    assert "model/llama3 changed (labels)" in result.out
    assert "pool/chat changed (labels)" in result.out
    assert "model/qwen2:0.5b unchanged" in result.out
    model = llmctl("model", "get", "llama3", "-o", "json").json()
    assert (model["labels"], model["generation"]) == ({"tier": "small"}, 1)
    pool = llmctl("pool", "get", "chat", "-o", "json").json()
    assert (pool["labels"], pool["generation"]) == ({"zone": "eu"}, 2)


def test_backend_list_wide_shows_the_labels(llmctl: Cli) -> None:
    llmctl(
        "backend", "add", "gpu-1", "--url", "http://10.0.0.5:11434", "--type", "ollama",
        "--label", "zone=a",
    )  # fmt: skip
    header, row = _rows(llmctl("backend", "list", "-o", "wide").out)
    assert row[header.index("LABELS")] == "zone=a"
