"""Label selectors (``-l/--selector``) on the lists, as a user types them, on SQLite and Postgres."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from emulators import ollama
from tests.e2e.conftest import Cli, Result, dump

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
        assert "Traceback" not in result.err
        assert "Usage:" not in result.err
    assert dump(database_url) == before


EXPORTED = """
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-a1, labels: {zone: a}}
spec: {type: ollama, url: "http://gpu-a1:11434"}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-b1, labels: {zone: b, draining: "yes"}}
spec: {type: ollama, url: "http://gpu-b1:11434"}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "llama3"}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat}
spec: {backends: [gpu-a1, gpu-b1], models: [llama3]}
"""


def _kinds_and_names(text: str) -> list[tuple[str, str]]:
    return [(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(text)]


def _reapply_to_an_empty_database(llmctl: Cli, tmp_path: pathlib.Path, text: str) -> Result:
    assert llmctl("db", "downgrade", "base").code == 0
    assert llmctl("db", "upgrade").code == 0
    path = tmp_path / "export.yaml"
    path.write_text(text)
    return llmctl("apply", "-f", str(path))


def test_export_kind_prints_only_those_kinds_and_reapplies_to_an_empty_database(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "fleet.yaml").write_text(EXPORTED)
    assert llmctl("apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    models_and_pools = llmctl("export", "--kind", "model,POOL")
    assert models_and_pools.code == 0, models_and_pools.err
    assert _kinds_and_names(models_and_pools.out) == [
        ("Model", "llama3"),
        ("Pool", "chat"),
        ("Pool", "default"),
    ]
    repeated = llmctl("export", "--kind", "Model", "--kind", "pool")
    assert repeated.out == models_and_pools.out
    backends = llmctl("export", "--kind", "backend")
    assert backends.code == 0, backends.err
    # No pool is printed with --kind Backend, so none can name a backend left out.
    assert _kinds_and_names(backends.out) == [("Backend", "gpu-a1"), ("Backend", "gpu-b1")]
    assert backends.err == ""
    applied = _reapply_to_an_empty_database(llmctl, tmp_path, backends.out)
    assert applied.code == 0, applied.err
    assert llmctl("export", "--kind", "Backend").out == backends.out
    assert _kinds_and_names(llmctl("export").out) == [
        ("Backend", "gpu-a1"),
        ("Backend", "gpu-b1"),
        ("Pool", "default"),
    ]


def test_export_l_prints_the_objects_whose_labels_match_and_reapplies_to_an_empty_database(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "fleet.yaml").write_text(EXPORTED)
    assert llmctl("apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    zone_a = llmctl("export", "-l", "zone=a")
    assert zone_a.code == 0, zone_a.err
    assert _kinds_and_names(zone_a.out) == [("Backend", "gpu-a1")]
    (doc,) = yaml.safe_load_all(zone_a.out)
    assert doc["metadata"]["labels"] == {"zone": "a"}
    both = llmctl("export", "--selector", "zone in (a,b)", "--kind", "Backend")
    assert _kinds_and_names(both.out) == [("Backend", "gpu-a1"), ("Backend", "gpu-b1")]
    applied = _reapply_to_an_empty_database(llmctl, tmp_path, zone_a.out)
    assert applied.code == 0, applied.err
    assert llmctl("export", "-l", "zone=a").out == zone_a.out
    assert _kinds_and_names(llmctl("export", "--kind", "Backend").out) == [("Backend", "gpu-a1")]


def test_export_l_prints_a_chosen_pool_with_its_members_and_names_those_left_out(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "fleet.yaml").write_text(EXPORTED)
    assert llmctl("apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
    # Objects without labels match !draining: the model and both pools, and gpu-a1.
    kept = llmctl("export", "-l", "!draining")
    assert kept.code == 0, kept.err
    assert _kinds_and_names(kept.out) == [
        ("Backend", "gpu-a1"),
        ("Model", "llama3"),
        ("Pool", "chat"),
        ("Pool", "default"),
    ]
    pools = {d["metadata"]["name"]: d for d in yaml.safe_load_all(kept.out) if d["kind"] == "Pool"}
    assert pools["chat"]["spec"]["backends"] == ["gpu-a1", "gpu-b1"]  # as declared
    assert "pool/chat names backend/gpu-b1, which is not in this export" in kept.err
    assert "pool/default" not in kept.err
    # Where gpu-b1 is declared the excerpt applies with no change; where it is not, apply
    # refuses it naming the member.
    path = tmp_path / "kept.yaml"
    path.write_text(kept.out)
    same = llmctl("apply", "-f", str(path))
    assert same.code == 0, same.err
    assert same.out.split() == [
        *("backend/gpu-a1", "unchanged", "model/llama3", "unchanged"),
        *("pool/chat", "unchanged", "pool/default", "unchanged"),
    ]
    refused = _reapply_to_an_empty_database(llmctl, tmp_path, kept.out)
    assert refused.code == 2
    assert "gpu-b1" in refused.err


@pytest.mark.parametrize("kind", ["Backends", "Backend,Secret", ""])
def test_export_of_an_unknown_kind_exits_2_naming_the_kinds(llmctl: Cli, kind: str) -> None:
    result = llmctl("export", "--kind", kind)
    assert result.code == 2
    assert result.out == ""
    assert "--kind: " in result.err
    assert "is not one of Backend, Model, Pool, Adapter" in result.err


LABELLED_FLEET = """
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-0, labels: {{zone: a}}}}
spec: {{type: ollama, url: "{url0}"}}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-1, labels: {{zone: b}}}}
spec: {{type: ollama, url: "{url1}"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "qwen2:0.5b"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "llama3.2:1b"}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: main}}
spec: {{backends: [gpu-0, gpu-1], models: ["qwen2:0.5b", "llama3.2:1b"]}}
"""


def _jobs(llmctl: Cli, *args: str) -> list[tuple[str, str, str]]:
    listed = llmctl("downloads", "list", "-o", "json", *args)
    assert listed.code == 0, listed.err
    return sorted((j["backend"], j["model"], j["state"]) for j in listed.json())


def test_reconcile_once_l_observes_plans_and_pulls_only_on_the_selected_backends(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with ollama.in_thread(nodes=2, installed=["qwen2:0.5b"]) as emu:
        fleet = LABELLED_FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1))
        (tmp_path / "fleet.yaml").write_text(fleet)
        assert llmctl("apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
        zone_a = llmctl("reconcile", "--once", "-l", "zone=a", "-o", "json")
        assert zone_a.code == 0, zone_a.err
        doc = zone_a.json()
        assert (doc["selector"], doc["selected"]) == ("zone=a", 1)
        assert [b["name"] for b in doc["backends"]] == ["gpu-0"]
        assert [(a["kind"], a["model"]) for a in doc["backends"][0]["actions"]] == [
            ("pull", "llama3.2:1b")
        ]
        assert emu.nodes[1].requests["GET /api/tags"] == 0  # never observed
        assert _jobs(llmctl) == [("gpu-0", "llama3.2:1b", "queued")]
        status = {b["name"]: b["status"] for b in llmctl("backend", "list", "-o", "json").json()}
        assert status["gpu-0"]["phase"] == "Ready"
        assert status["gpu-1"] is None

        zone_b = llmctl("reconcile", "--once", "-l", "zone=b")
        assert zone_b.code == 0, zone_b.err
        assert zone_b.out.splitlines()[0] == "selector zone=b: 1 backend selected"
        assert "gpu-0" not in zone_b.out
        assert "pull llama3.2:1b on gpu-1" in zone_b.out
        # The other backend's queued pull and persisted status are left as they were.
        assert _jobs(llmctl) == [
            ("gpu-0", "llama3.2:1b", "queued"),
            ("gpu-1", "llama3.2:1b", "queued"),
        ]
        status = {b["name"]: b["status"] for b in llmctl("backend", "list", "-o", "json").json()}
        assert status["gpu-0"]["phase"] == "Ready"
        assert status["gpu-1"]["phase"] == "Ready"
        assert _jobs(llmctl, "-l", "zone=a") == [("gpu-0", "llama3.2:1b", "queued")]
        assert _jobs(llmctl, "--selector", "zone in (a,b)", "--limit", "1") == [
            ("gpu-1", "llama3.2:1b", "queued")
        ]
        assert _jobs(llmctl, "-l", "zone=c") == []

        tags = [node.requests["GET /api/tags"] for node in emu.nodes]
        nothing = llmctl("reconcile", "--once", "-l", "zone=c")
        assert nothing.code == 0, nothing.err
        assert nothing.out.strip() == "selector zone=c: no backend matches; nothing to do"
        assert [node.requests["GET /api/tags"] for node in emu.nodes] == tags
        assert emu.nodes[0].requests["POST /api/pull"] == 0  # queued, not pulled: no --wait


def test_reconcile_selector_with_wait_exits_2_and_changes_nothing(
    llmctl: Cli, database_url: str
) -> None:
    _declare(llmctl)
    before = dump(database_url)
    result = llmctl("reconcile", "--once", "--wait", "-l", "zone=a")
    assert result.code == 2
    assert "-l/--selector and --wait cannot be combined" in result.err
    assert dump(database_url) == before


def test_resolve_selector_keeps_only_backends_whose_labels_match_and_names_it_when_none_do(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with ollama.in_thread(nodes=2, installed=["qwen2:0.5b"]) as emu:
        fleet = LABELLED_FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1))
        (tmp_path / "fleet.yaml").write_text(fleet)
        assert llmctl("apply", "-f", str(tmp_path / "fleet.yaml")).code == 0
        assert llmctl("reconcile", "--once").code == 0
    for zone, chosen, other in (("a", "gpu-0", "gpu-1"), ("b", "gpu-1", "gpu-0")):
        result = llmctl(
            "resolve", "qwen2:0.5b", "--selector", f"zone={zone}", "--explain", "-o", "json"
        )
        assert result.code == 0, result.err
        doc = result.json()
        assert doc["provider"]["backend"] == chosen
        assert doc["fallbacks"] == []
        assert [(e["backend"], e["reason"]) for e in doc["excluded"]] == [
            (other, "selector_mismatch")
        ]
    unselected = llmctl("resolve", "qwen2:0.5b")
    assert unselected.code == 0, unselected.err
    assert "FALLBACKS" in unselected.out  # both backends qualify without a selector
    none = llmctl("resolve", "qwen2:0.5b", "--selector", "zone=c")
    assert none.code == 1
    assert none.err.strip() == (
        "error: allows only backends matching the selector zone=c; qwen2:0.5b is served only "
        "by backends that do not match (gpu-0, gpu-1)"
    )
