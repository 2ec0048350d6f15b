"""``llmctl apply`` and ``llmctl export``: declarative files that round-trip exactly."""

from __future__ import annotations

import pathlib

from tests.e2e.conftest import Cli, dump

FLEET = """
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-1, labels: {zone: a}}
spec: {type: ollama, url: "http://10.0.0.5:11434", prune: managed, maxPulls: 2}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-2, labels: {zone: b}}
spec: {type: ollama, url: "http://10.0.0.6:11434", prune: all}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {name: vllm-1}
spec: {type: vllm, url: "http://10.0.0.7:8000/v1", credentials: {env: VLLM_API_KEY}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "llama3.2:1b"}
spec: {contextLength: 8192, capabilities: [chat, stream]}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "qwen2:0.5b"}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "nomic-embed-text"}
spec: {capabilities: [embed]}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "llama3"}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "Qwen/Qwen2.5-0.5B-Instruct"}
spec: {contextLength: 32768}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat}
spec: {purpose: "interactive chat", backends: [gpu-1, gpu-2], models: ["llama3.2:1b", "llama3", "qwen2:0.5b"]}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: serving}
spec: {purpose: "vLLM", backends: [vllm-1, gpu-2], models: ["Qwen/Qwen2.5-0.5B-Instruct", "nomic-embed-text"]}
"""


def _write(tmp_path: pathlib.Path, text: str, name: str = "fleet.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _actions(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def test_a_fleet_applies_exports_and_reapplies_with_no_change(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    first = llmctl("apply", "-f", _write(tmp_path, FLEET))
    assert first.code == 0, first.err
    actions = _actions(first.out)
    assert actions["backend/gpu-1"] == "created"
    assert actions["pool/serving"] == "created"
    assert list(actions.values()).count("created") == 10
    gpu2 = llmctl("backend", "get", "gpu-2", "-o", "json").json()
    assert gpu2["desiredModels"] == sorted(
        ["Qwen/Qwen2.5-0.5B-Instruct", "llama3", "llama3.2:1b", "nomic-embed-text", "qwen2:0.5b"]
    )
    exported = llmctl("export").out
    again = llmctl("apply", "-f", _write(tmp_path, exported, "export.yaml"))
    assert again.code == 0, again.err
    assert set(_actions(again.out).values()) == {"unchanged"}
    assert llmctl("export").out == exported
    assert set(_actions(llmctl("apply", "-f", _write(tmp_path, FLEET)).out).values()) == {
        "unchanged"
    }


def test_a_dry_run_prints_the_diff_and_writes_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    llmctl("apply", "-f", _write(tmp_path, FLEET))
    before = dump(database_url)
    changed = FLEET.replace("maxPulls: 2", "maxPulls: 4").replace('"qwen2:0.5b"', '"qwen2:1.5b"')
    result = llmctl(
        "apply", "-f", _write(tmp_path, changed, "changed.yaml"), "--dry-run", "--prune"
    )
    assert result.code == 0, result.err
    assert "backend/gpu-1 changed (maxPulls) (dry run)" in result.out
    assert "model/qwen2:1.5b created (dry run)" in result.out
    assert "model/qwen2:0.5b deleted (dry run)" in result.out
    assert dump(database_url) == before


def test_prune_deletes_what_the_file_no_longer_names(llmctl: Cli, tmp_path: pathlib.Path) -> None:
    llmctl("apply", "-f", _write(tmp_path, FLEET))
    llmctl("pool", "create", "extra")
    smaller = "---".join(doc for doc in FLEET.split("---") if "gpu-2" not in doc.split("spec")[0])
    smaller = smaller.replace("backends: [gpu-1, gpu-2]", "backends: [gpu-1]")
    smaller = smaller.replace("backends: [vllm-1, gpu-2]", "backends: [vllm-1]")
    without_pruning = llmctl("apply", "-f", _write(tmp_path, smaller))
    assert without_pruning.code == 0, without_pruning.err
    assert "gpu-2" in [b["name"] for b in llmctl("backend", "list", "-o", "json").json()]
    pruned = llmctl("apply", "-f", _write(tmp_path, smaller), "--prune")
    assert pruned.code == 0, pruned.err
    assert "backend/gpu-2 deleted" in pruned.out
    assert "pool/extra deleted" in pruned.out
    assert [b["name"] for b in llmctl("backend", "list", "-o", "json").json()] == [
        "gpu-1",
        "vllm-1",
    ]
    assert [p["name"] for p in llmctl("pool", "list", "-o", "json").json()] == [
        "chat",
        "default",
        "serving",
    ]


def test_a_changed_field_bumps_only_that_objects_generation(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    llmctl("apply", "-f", _write(tmp_path, FLEET))
    changed = FLEET.replace("contextLength: 8192", "contextLength: 16384")
    result = llmctl("apply", "-f", _write(tmp_path, changed))
    assert "model/llama3.2:1b changed (contextLength)" in result.out
    models = {m["name"]: m for m in llmctl("model", "list", "-o", "json").json()}
    assert models["llama3.2:1b"]["generation"] == 2
    assert models["llama3.2:1b"]["contextLength"] == 16384
    assert models["qwen2:0.5b"]["generation"] == 1


def test_an_exported_encrypted_key_round_trips_without_being_shown(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    env = {"LLMCTL_SECRET_KEY": "Vq4-a-random-looking-secret-key-0123"}
    llmctl(
        "backend", "add", "cloud", "--url", "https://api.example.com/v1", "--type", "openai",
        "--api-key-stdin", "--no-pool", input="sk-abcdef", env=env,
    )  # fmt: skip
    exported = llmctl("export").out
    assert "encrypted: true" in exported
    assert "sk-abcdef" not in exported
    result = llmctl("apply", "-f", _write(tmp_path, exported))
    assert result.code == 0, result.err
    assert "backend/cloud unchanged" in result.out
