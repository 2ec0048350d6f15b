"""Issue 16's declarations through the CLI: adapters, warm models, backends' budgets, files."""

from __future__ import annotations

import pathlib

import pytest

from tests.e2e.conftest import Cli, dump

BASE = "Qwen/Qwen2.5-0.5B-Instruct"


def _fleet(llmctl: Cli) -> None:
    for args in (
        ("backend", "add", "vllm-1", "--url", "http://10.0.0.7:8000", "--type", "vllm"),
        ("model", "add", BASE),
    ):
        done = llmctl(*args)
        assert done.code == 0, done.err


def test_adapter_add_list_get_update_and_delete(llmctl: Cli) -> None:
    _fleet(llmctl)
    added = llmctl("adapter", "add", "sql-lora", "--base-model", BASE, "--source",
                   "org/sql-lora", "--revision", "v1", "--label", "team=data", "--pool", "default")  # fmt: skip
    assert (added.code, added.out.strip()) == (0, "adapter/sql-lora created")
    row = llmctl("adapter", "list").out.splitlines()[-1]
    assert row.split()[:5] == ["sql-lora", BASE, "org/sql-lora", "default", "1"]
    assert "team=data" in llmctl("adapter", "list", "-o", "wide").out
    assert "sql-lora" not in llmctl("adapter", "list", "-l", "team=ops").out
    doc = llmctl("adapter", "get", "sql-lora", "-o", "json").json()
    assert (doc["baseModel"], doc["revision"], doc["backends"]) == (BASE, "v1", ["vllm-1"])
    updated = llmctl("adapter", "update", "sql-lora", "--source", "/adapters/sql", "--no-revision")
    assert updated.out.strip() == "adapter/sql-lora updated", updated.err
    doc = llmctl("adapter", "get", "sql-lora", "-o", "json").json()
    assert (doc["source"], doc["revision"], doc["generation"]) == ("/adapters/sql", None, 2)
    assert llmctl("adapter", "update", "sql-lora").out.strip() == "adapter/sql-lora unchanged"
    assert llmctl("adapter", "delete", "sql-lora").out.strip() == "adapter/sql-lora deleted"
    assert llmctl("adapter", "list", "-o", "json").json() == []


def test_pool_add_adapter_and_remove_adapter_are_idempotent(llmctl: Cli) -> None:
    _fleet(llmctl)
    assert (
        llmctl("adapter", "add", "sql-lora", "--base-model", BASE, "--source", "/a/sql").code == 0
    )
    assert llmctl("backend", "get", "vllm-1", "-o", "json").json()["name"] == "vllm-1"
    said = [
        llmctl("pool", verb, "default", "sql-lora").out.strip()
        for verb in ("add-adapter", "add-adapter", "remove-adapter", "remove-adapter")
    ]
    assert said == [
        "adapter/sql-lora added to pool/default",
        "adapter/sql-lora already in pool/default",
        "adapter/sql-lora removed from pool/default",
        "adapter/sql-lora not in pool/default",
    ]
    assert llmctl("pool", "add-adapter", "default", "sql-lora").code == 0
    assert llmctl("pool", "get", "default", "-o", "json").json()["adapters"] == ["sql-lora"]
    assert "sql-lora" in llmctl("pool", "list", "-o", "wide").out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--base-model", "Qwen/Qwen2.5-0.5B-Instruc", "--source", "/a"), "baseModel: model"),
        (("--base-model", BASE, "--source", "adapters/../x"), "source: "),
        (("--base-model", BASE, "--source", "sql"), "not a path or repo id"),
        (("--base-model", BASE, "--source", "/a", "--revision", "main"), "revision: "),
        (("--source", "/a",), "needs --base-model"),
        (("--base-model", BASE, "--source", "/a", "--pool", "nope"), "pool 'nope' does not"),
    ],
)  # fmt: skip
def test_a_bad_adapter_exits_2_with_one_line_and_writes_nothing(
    llmctl: Cli, database_url: str, args: tuple[str, ...], says: str
) -> None:
    _fleet(llmctl)
    before = dump(database_url)
    done = llmctl("adapter", "add", "sql-lora", *args)
    assert done.code == 2
    assert says in done.err
    assert len(done.err.strip().splitlines()) == 1, done.err
    assert "Traceback" not in done.err
    assert dump(database_url) == before


def test_an_adapter_and_a_model_cannot_share_a_name(llmctl: Cli, database_url: str) -> None:
    _fleet(llmctl)
    assert llmctl("model", "add", "sql").code == 0
    refused = llmctl("adapter", "add", "sql", "--base-model", BASE, "--source", "/a")
    assert refused.code == 2
    assert "already answers to that name" in refused.err
    assert llmctl("adapter", "add", "lora", "--base-model", BASE, "--source", "/a").code == 0
    refused = llmctl("model", "add", "lora")
    assert (refused.code, "already has that name" in refused.err) == (2, True)
    refused = llmctl("model", "delete", BASE)
    assert (refused.code, "base model of adapter lora" in refused.err) == (2, True)
    assert llmctl("adapter", "add", "bad/name", "--base-model", BASE, "--source", "/a").code == 2


def test_model_warm_and_keep_alive_are_declared_updated_and_cleared(llmctl: Cli) -> None:
    assert llmctl("model", "add", "qwen2:0.5b", "--warm", "--keep-alive", "1h30m").code == 0
    doc = llmctl("model", "get", "qwen2:0.5b", "-o", "json").json()
    assert (doc["warm"], doc["keepAlive"]) == (True, "1h30m")
    assert "1h30m" in llmctl("model", "list", "-o", "wide").out
    assert llmctl("model", "update", "qwen2:0.5b", "--keep-alive", "-1").code == 0
    assert llmctl("model", "get", "qwen2:0.5b", "-o", "json").json()["keepAlive"] == "-1"
    assert llmctl("model", "update", "qwen2:0.5b", "--no-warm", "--no-keep-alive").code == 0
    doc = llmctl("model", "get", "qwen2:0.5b", "-o", "json").json()
    assert (doc["warm"], doc["keepAlive"], doc["generation"]) == (False, None, 3)


@pytest.mark.parametrize("value", ["0", "soon", "5 minutes"])
def test_a_bad_keep_alive_exits_2_naming_the_field(
    llmctl: Cli, database_url: str, value: str
) -> None:
    before = dump(database_url)
    done = llmctl("model", "add", "qwen2:0.5b", "--warm", "--keep-alive", value)
    assert (done.code, done.err.startswith("error: keepAlive:") or "keepAlive" in done.err) == (
        2,
        True,
    )
    assert dump(database_url) == before


def test_backend_vram_and_disk_take_sizes_show_them_in_wide_and_clear_with_none(
    llmctl: Cli,
) -> None:
    added = llmctl("backend", "add", "gpu-1", "--url", "http://h:11434", "--type", "ollama",
                   "--vram", "24GiB", "--disk", "500GB")  # fmt: skip
    assert added.code == 0, added.err
    doc = llmctl("backend", "get", "gpu-1", "-o", "json").json()
    assert (doc["vramBytes"], doc["diskBytes"]) == (24 * 2**30, 500 * 10**9)
    wide = llmctl("backend", "list", "-o", "wide").out
    assert "25.8 GB" in wide
    assert "500 GB" in wide
    assert llmctl("backend", "update", "gpu-1", "--disk", "none").code == 0
    doc = llmctl("backend", "get", "gpu-1", "-o", "json").json()
    assert (doc["vramBytes"], doc["diskBytes"], doc["generation"]) == (24 * 2**30, None, 2)
    bad = llmctl("backend", "update", "gpu-1", "--vram", "lots")
    assert (bad.code, "vram:" in bad.err) == (2, True)


FILE = f"""
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: vllm-1}}
spec: {{type: vllm, url: "http://10.0.0.7:8000", vramBytes: "24GiB", diskBytes: 500000000000}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "{BASE}"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "qwen2:0.5b"}}
spec: {{warm: true, keepAlive: 30m}}
---
apiVersion: llmctl/v1
kind: Adapter
metadata: {{name: sql-lora, labels: {{team: data}}}}
spec: {{baseModel: "{BASE}", source: org/sql-lora, revision: main}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: serving}}
spec: {{backends: [vllm-1], models: ["{BASE}"], adapters: [sql-lora]}}
"""


def test_apply_export_apply_round_trips_adapters_warm_models_and_budgets(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FILE)
    applied = llmctl("apply", "-f", str(path))
    assert applied.code == 0, applied.err
    assert "adapter/sql-lora created" in applied.out
    exported = llmctl("export").out
    assert "vramBytes: 25769803776" in exported
    assert "keepAlive: 30m" in exported
    assert "kind: Adapter" in exported
    assert "- sql-lora" in exported
    (tmp_path / "fleet.yaml").write_text(exported)
    again = llmctl("apply", "-f", str(tmp_path))
    assert again.code == 0, again.err
    assert [line.split()[1] for line in again.out.splitlines()] == ["unchanged"] * 6
    assert llmctl("export", "--kind", "Adapter").out.count("kind:") == 1


def test_apply_says_which_adapter_fields_changed_and_delete_f_removes_the_adapter(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FILE)
    assert llmctl("apply", "-f", str(path)).code == 0
    path.write_text(FILE.replace("revision: main", "revision: v2").replace("30m", "1h"))
    changed = llmctl("apply", "-f", str(path)).out
    assert "adapter/sql-lora changed (revision)" in changed
    assert "model/qwen2:0.5b changed (keepAlive)" in changed
    adapter_only = tmp_path / "adapter.yaml"
    adapter_only.write_text(FILE.split("---")[3])
    deleted = llmctl("delete", "-f", str(adapter_only))
    assert deleted.out.strip() == "adapter/sql-lora deleted", deleted.err
    assert llmctl("adapter", "list", "-o", "json").json() == []


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("source: org/sql-lora", "source: ../x", "spec.source:"),
        ("baseModel: \"" + BASE + "\"", "baseModel: nope", "spec.baseModel: model 'nope'"),
        ("adapters: [sql-lora]", "adapters: [sql-lorb]", "spec.adapters: adapter 'sql-lorb'"),
        ("keepAlive: 30m", "keepAlive: 0", "spec.keepAlive:"),
        ("vramBytes: \"24GiB\"", "vramBytes: true", "spec.vramBytes:"),
        ("revision: main", "revision: main, rank: 8", "spec.rank: is not a field"),
    ],
)  # fmt: skip
def test_a_bad_residency_document_is_refused_naming_the_field_and_writes_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path, old: str, new: str, says: str
) -> None:
    path = tmp_path / "fleet.yaml"
    assert old in FILE
    path.write_text(FILE.replace(old, new))
    before = dump(database_url)
    done = llmctl("apply", "-f", str(path))
    assert done.code == 2
    assert says in done.err, done.err
    assert dump(database_url) == before


def test_adapter_names_complete_from_the_database(llmctl: Cli, database_url: str) -> None:
    from tests.e2e.test_cli_completion import complete

    _fleet(llmctl)
    for name in ("sql-lora", "chat-lora"):
        assert llmctl("adapter", "add", name, "--base-model", BASE, "--source", "/a").code == 0
    assert complete("llmctl adapter get ", database_url) == ["chat-lora", "sql-lora"]
    assert complete("llmctl pool add-adapter default s", database_url) == ["sql-lora"]
    assert complete("llmctl adapter add x --base-model Q", database_url) == [BASE]
