"""Declaring backends, models and pools with the CLI, on SQLite and Postgres."""

from __future__ import annotations

from tests.e2e.conftest import Cli


def test_backend_add_then_list_shows_generation_one_and_update_bumps_it(llmctl: Cli) -> None:
    added = llmctl("backend", "add", "gpu-1", "--url", "http://10.0.0.5:11434", "--type", "ollama")
    assert added.code == 0, added.err
    assert added.out.strip() == "backend/gpu-1 created"
    (listed,) = llmctl("backend", "list", "-o", "json").json()
    assert listed["name"] == "gpu-1"
    assert listed["generation"] == 1
    assert listed["pools"] == ["default"]
    assert llmctl("backend", "update", "gpu-1", "--max-pulls", "2").code == 0
    (listed,) = llmctl("backend", "list", "-o", "json").json()
    assert listed["generation"] == 2
    assert listed["maxPulls"] == 2


def test_backend_get_shows_the_desired_models_from_its_pools(llmctl: Cli) -> None:
    llmctl("pool", "create", "chat", "--purpose", "interactive")
    llmctl(
        "backend", "add", "gpu-1", "--url", "http://h:11434", "--type", "ollama", "--pool", "chat"
    )
    llmctl("model", "add", "llama3.2:1b", "--pool", "chat", "--context-length", "8192")
    llmctl("model", "add", "qwen2:0.5b")  # default pool only, which gpu-1 is not in
    got = llmctl("backend", "get", "gpu-1", "-o", "json").json()
    assert got["pools"] == ["chat"]
    assert got["desiredModels"] == ["llama3.2:1b"]
    model = llmctl("model", "get", "llama3.2:1b", "-o", "yaml")
    assert "contextLength: 8192" in model.out
    assert "- gpu-1" in model.out


def test_pool_membership_commands_are_idempotent(llmctl: Cli) -> None:
    llmctl("pool", "create", "gpu")
    llmctl("backend", "add", "gpu-1", "--url", "http://h:11434", "--type", "ollama", "--no-pool")
    llmctl("model", "add", "llama3", "--no-pool")
    assert (
        llmctl("pool", "add-backend", "gpu", "gpu-1").out.strip()
        == "backend/gpu-1 added to pool/gpu"
    )
    assert (
        llmctl("pool", "add-backend", "gpu", "gpu-1").out.strip()
        == "backend/gpu-1 already in pool/gpu"
    )
    assert llmctl("pool", "add-model", "gpu", "llama3:latest").code == 0
    pool = llmctl("pool", "get", "gpu", "-o", "json").json()
    assert pool["backends"] == ["gpu-1"]
    assert pool["models"] == ["llama3"]
    assert llmctl("pool", "remove-model", "gpu", "llama3").code == 0
    assert llmctl("pool", "remove-backend", "gpu", "gpu-1").code == 0
    pool = llmctl("pool", "get", "gpu", "-o", "json").json()
    assert pool["backends"] == []
    assert pool["models"] == []
    assert llmctl("pool", "delete", "gpu").code == 0
    assert [p["name"] for p in llmctl("pool", "list", "-o", "json").json()] == ["default"]


def test_deleting_objects_removes_them_from_listings(llmctl: Cli) -> None:
    llmctl("backend", "add", "gpu-1", "--url", "http://h:11434", "--type", "ollama")
    llmctl("model", "add", "llama3")
    assert llmctl("model", "delete", "llama3:latest").code == 0
    assert llmctl("backend", "delete", "gpu-1").code == 0
    assert llmctl("backend", "list", "-o", "json").json() == []
    assert llmctl("model", "list", "-o", "json").json() == []


def test_table_output_has_kubectl_style_columns(llmctl: Cli) -> None:
    llmctl("backend", "add", "gpu-1", "--url", "http://10.0.0.5:11434", "--type", "ollama")
    llmctl("model", "add", "llama3")
    table = llmctl("backend", "list").out
    header, *rows = [line for line in table.splitlines() if line.strip() and "─" not in line]
    assert header.split() == ["NAME", "TYPE", "PHASE", "READY", "PULLING", "ERROR", "AGE"]
    assert rows[0].split()[:6] == ["gpu-1", "ollama", "Unknown", "-", "-", "-"]
    wide = llmctl("backend", "list", "-o", "wide").out.splitlines()[0].split()
    assert wide[6:] == [
        "URL", "PRUNE", "MAX-PULLS", "VRAM", "DISK", "POOLS", "GEN", "OBSERVED-GEN", "LABELS",
        "AGE",
    ]  # fmt: skip
    got = llmctl("backend", "get", "gpu-1").out
    assert "not observed yet" in got


def test_api_key_from_an_environment_variable_is_stored_as_a_reference(llmctl: Cli) -> None:
    added = llmctl(
        "backend", "add", "openai", "--url", "https://api.openai.com/v1", "--type", "openai",
        "--api-key-env", "OPENAI_API_KEY", "--no-pool",
    )  # fmt: skip
    assert added.code == 0, added.err
    assert (
        llmctl("backend", "get", "openai", "-o", "json").json()["credentials"]
        == "env:OPENAI_API_KEY"
    )


def test_api_key_from_stdin_is_stored_encrypted_and_never_shown(
    llmctl: Cli, database_url: str
) -> None:
    secret = "sk-test-0123456789abcdef"
    env = {"LLMCTL_SECRET_KEY": "Vq4-a-random-looking-secret-key-0123"}
    added = llmctl(
        "backend", "add", "openai", "--url", "https://api.openai.com/v1", "--type", "openai",
        "--api-key-stdin", "--no-pool", input=secret + "\n", env=env,
    )  # fmt: skip
    assert added.code == 0, added.err
    outputs = [
        llmctl("backend", "get", "openai", "-o", fmt).out for fmt in ("json", "yaml", "table")
    ] + [llmctl("backend", "list", "-o", "json").out, llmctl("export").out]
    assert llmctl("backend", "get", "openai", "-o", "json").json()["credentials"] == "encrypted"
    for text in outputs:
        assert secret not in text
    from tests.e2e.conftest import dump

    assert secret not in str(dump(database_url))


def test_model_update_changes_overrides_and_pools(llmctl: Cli) -> None:
    llmctl("pool", "create", "chat")
    llmctl("model", "add", "llama3")
    updated = llmctl(
        "model", "update", "llama3:latest", "--context-length", "8192", "--pool", "chat"
    )
    assert updated.out.strip() == "model/llama3:latest updated", updated.err
    got = llmctl("model", "get", "llama3", "-o", "json").json()
    assert (got["contextLength"], got["pools"], got["generation"]) == (8192, ["chat"], 2)
    assert (
        llmctl("model", "update", "llama3", "--context-length", "8192").out.strip()
        == "model/llama3 unchanged"
    )
    llmctl("model", "update", "llama3", "--no-context-length", "--capability", "embed")
    got = llmctl("model", "get", "llama3", "-o", "json").json()
    assert (got["contextLength"], got["capabilities"], got["generation"]) == (None, ["embed"], 3)


def test_pool_update_changes_the_purpose_and_bumps_the_generation_only_on_a_change(
    llmctl: Cli,
) -> None:
    llmctl("backend", "add", "gpu-1", "--url", "http://h:11434", "--type", "ollama", "--no-pool")
    llmctl("pool", "create", "chat", "--purpose", "chat")
    llmctl("pool", "add-backend", "chat", "gpu-1")
    before = llmctl("pool", "get", "chat", "-o", "json").json()
    updated = llmctl("pool", "update", "chat", "--purpose", "interactive chat")
    assert (updated.code, updated.out.strip()) == (0, "pool/chat updated"), updated.err
    got = llmctl("pool", "get", "chat", "-o", "json").json()
    assert got["purpose"] == "interactive chat"
    assert got["backends"] == ["gpu-1"]
    assert got["generation"] == before["generation"] + 1
    again = llmctl("pool", "update", "chat", "--purpose", "interactive chat")
    assert (again.code, again.out.strip()) == (0, "pool/chat unchanged")
    assert llmctl("pool", "get", "chat", "-o", "json").json()["generation"] == got["generation"]


def test_pool_create_of_an_existing_pool_points_to_a_pool_update_that_works(llmctl: Cli) -> None:
    llmctl("pool", "create", "chat")
    refused = llmctl("pool", "create", "chat", "--purpose", "interactive")
    assert refused.code == 2
    assert "use llmctl pool update" in refused.err
    assert llmctl("pool", "update", "chat", "--purpose", "interactive").code == 0
    assert llmctl("pool", "get", "chat", "-o", "json").json()["purpose"] == "interactive"
