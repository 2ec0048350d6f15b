"""Raw HTTP details of the Ollama emulator that the official client hides (PROTOCOLS §1)."""

from __future__ import annotations

import json
import re

import httpx

from emulators import ollama as emulator

RFC3339_LOCAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


async def test_root_answers_get_and_head_with_plain_text(ollama_emu: emulator.Emulator) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        got = await http.get("/")
        head = await http.head("/")

    assert (got.status_code, got.text) == (200, "Ollama is running")
    assert got.headers["content-type"].startswith("text/plain")
    assert head.status_code == 200
    assert head.content == b""


async def test_unknown_paths_and_wrong_methods_get_gin_plain_text(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        missing = await http.get("/api/nothing")
        wrong = await http.get("/api/pull")

    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")


async def test_post_without_a_body_is_400_missing_request_body(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        responses = [await http.post(p) for p in ("/api/pull", "/api/show", "/api/generate")]
        deleted = await http.request("DELETE", "/api/delete")

    for response in [*responses, deleted]:
        assert response.status_code == 400
        assert response.json() == {"error": "missing request body"}


async def test_invalid_names_are_400_with_the_endpoint_wording(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        pulled = await http.post("/api/pull", json={"model": "bad name!"})
        deleted = await http.request("DELETE", "/api/delete", json={"model": "a/b/c/d"})

    assert pulled.status_code == 400
    assert pulled.json() == {"error": "invalid model name"}
    assert deleted.status_code == 400
    assert deleted.json() == {"error": 'name "a/b/c/d" is invalid'}


async def test_delete_answers_200_with_an_empty_body(ollama_emu: emulator.Emulator) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        deleted = await http.request("DELETE", "/api/delete", json={"model": "Qwen2:0.5b"})
        again = await http.request("DELETE", "/api/delete", json={"model": "Qwen2:0.5b"})

    assert deleted.status_code == 200
    assert deleted.content == b""
    assert again.status_code == 404
    assert again.json() == {"error": "model 'Qwen2:0.5b' not found"}


async def test_tags_entries_carry_name_model_timestamps_and_v030_fields(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        body = (await http.get("/api/tags")).json()
        version = (await http.get("/api/version")).json()

    entry = next(m for m in body["models"] if m["name"] == "nomic-embed-text:latest")
    assert entry["model"] == entry["name"]
    assert RFC3339_LOCAL.match(entry["modified_at"])
    assert entry["details"]["families"] == ["nomic-bert"]
    assert entry["details"]["context_length"] == 2048
    assert entry["capabilities"] == ["embedding"]
    assert version == {"version": emulator.DEFAULT_VERSION}


async def test_progress_lines_leave_out_zero_fields_and_are_ndjson(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        response = await http.post("/api/pull", json={"model": "all-minilm"})

    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    first_blob = lines[1]
    assert set(first_blob) == {"status", "digest", "total"}  # completed 0 is omitted
    assert first_blob["digest"].startswith("sha256:")
    assert len(first_blob["digest"]) == 71
    assert lines[-1] == {"status": "success"}


async def test_unstreamed_pull_answers_the_last_object(ollama_emu: emulator.Emulator) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        response = await http.post("/api/pull", json={"model": "all-minilm", "stream": False})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "success"}


async def test_embed_of_a_missing_model_uses_the_try_pulling_wording(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        missing = await http.post("/api/embed", json={"model": "foo", "input": "x"})
        bad = await http.post("/api/embed", json={"model": "nomic-embed-text", "input": 3})

    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "foo" not found, try pulling it first'}
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid input type"}


async def test_ps_expiry_is_far_ahead_for_a_negative_keep_alive(
    ollama_emu: emulator.Emulator,
) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        await http.post("/api/generate", json={"model": "qwen2:0.5b", "keep_alive": -1})
        body = (await http.get("/api/ps")).json()

    (entry,) = body["models"]
    assert entry["name"] == entry["model"] == "qwen2:0.5b"
    assert RFC3339_LOCAL.match(entry["expires_at"])
    assert int(entry["expires_at"][:4]) > 2300


async def test_admin_state_counts_requests_per_node_and_endpoint() -> None:
    async with emulator.running(nodes=2) as emu, httpx.AsyncClient(base_url=emu.url) as http:
        await http.get("/nodes/1/api/tags")
        await http.get("/nodes/1/api/tags")
        await http.post("/nodes/0/api/pull", json={"model": "all-minilm"})
        root = (await http.get("/_emulator/state")).json()
        one = (await http.get("/nodes/1/_emulator/state")).json()
        not_at_root = await http.get("/api/tags")

    assert root["flavour"] == "ollama"
    assert root["nodes"][0]["requests"] == {"POST /api/pull": 1}
    assert root["nodes"][0]["pulls"] == {"all-minilm:latest": 1}
    assert one["nodes"][0]["requests"] == {"GET /api/tags": 2}
    assert not_at_root.status_code == 404  # with several nodes, only prefixed paths answer


async def test_admin_faults_and_reset_apply_to_one_node_through_http() -> None:
    async with (
        emulator.running(nodes=2, installed=["all-minilm"]) as emu,
        httpx.AsyncClient(base_url=emu.url) as http,
    ):
        armed = await http.post(
            "/nodes/1/_emulator/faults", json={"kind": "http_500", "endpoint": "/api/tags"}
        )
        failing = await http.get("/nodes/1/api/tags")
        healthy = await http.get("/nodes/0/api/tags")
        await http.request("DELETE", "/nodes/1/api/delete", json={"model": "all-minilm"})
        await http.post("/_emulator/reset")
        after = await http.get("/nodes/1/api/tags")

    assert armed.status_code == 200
    assert failing.status_code == 500
    assert "error" in failing.json()
    assert healthy.status_code == 200
    assert after.status_code == 200
    assert [m["name"] for m in after.json()["models"]] == ["all-minilm:latest"]
    assert emu.nodes[1].requests == {"GET /api/tags": 1}  # counters were zeroed by the reset


async def test_admin_state_patch_changes_installed_models(ollama_emu: emulator.Emulator) -> None:
    async with httpx.AsyncClient(base_url=ollama_emu.url) as http:
        patched = await http.post("/_emulator/state", json={"installed": ["llama3"]})
        bad = await http.post("/_emulator/state", json={"colour": "blue"})
        listed = (await http.get("/api/tags")).json()

    assert patched.status_code == 200
    assert bad.status_code == 400
    assert [m["name"] for m in listed["models"]] == ["llama3:latest"]
