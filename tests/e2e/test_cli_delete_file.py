"""``llmctl delete -f``: deleting what a file names, in one transaction, as kubectl does."""

from __future__ import annotations

import asyncio
import json
import pathlib

from tests.e2e.conftest import Cli, dump
from tests.e2e.test_cli_apply import FLEET
from tests.e2e.test_cli_downloads import _collect, cycle_request_ids

SMALL = """
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-1}
spec: {type: ollama, url: "http://h:1"}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: llama3}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat}
spec: {backends: [gpu-1], models: [llama3]}
"""


def _write(tmp_path: pathlib.Path, text: str, name: str = "fleet.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _names(llmctl: Cli) -> list[str]:
    return [
        line
        for kind in ("backend", "model", "pool")
        for line in llmctl(kind, "list", "-o", "name").out.splitlines()
    ]


def test_delete_f_deletes_every_object_an_applied_file_names(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    fleet = _write(tmp_path, FLEET)
    assert llmctl("apply", "-f", fleet).code == 0
    assert llmctl("backend", "add", "kept", "--url", "http://k:1", "--type", "ollama").code == 0
    result = llmctl("delete", "-f", fleet)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "backend/gpu-1 deleted"
    assert "model/Qwen/Qwen2.5-0.5B-Instruct deleted" in lines
    assert lines[-1] == "pool/serving deleted"
    assert len(lines) == 10
    assert _names(llmctl) == ["backend/kept", "pool/default"]


def test_delete_f_dry_run_prints_what_would_be_deleted_and_writes_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    fleet = _write(tmp_path, SMALL)
    assert llmctl("apply", "-f", fleet).code == 0
    before = dump(database_url)
    result = llmctl("delete", "-f", fleet, "--dry-run")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "backend/gpu-1 deleted (dry run)",
        "model/llama3 deleted (dry run)",
        "pool/chat deleted (dry run)",
    ]
    assert dump(database_url) == before


def test_delete_f_never_deletes_the_default_pool_and_deletes_the_rest(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    assert llmctl("backend", "add", "gpu-1", "--url", "http://h:1", "--type", "ollama").code == 0
    text = SMALL.split("---")[0] + "---\nkind: Pool\nmetadata: {name: default}\n"
    result = llmctl("delete", "-f", _write(tmp_path, text))
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "backend/gpu-1 deleted",
        "pool/default kept (the default pool is never deleted)",
    ]
    assert _names(llmctl) == ["pool/default"]


def test_objects_not_stored_are_reported_after_the_rest_is_deleted_and_exit_1(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    assert llmctl("apply", "-f", _write(tmp_path, SMALL)).code == 0
    text = SMALL.replace("name: gpu-1}", "name: gpu-l}").replace("name: chat}", "name: spare}")
    result = llmctl("delete", "-f", _write(tmp_path, text, "typo.yaml"))
    assert result.code == 1
    assert result.out.splitlines() == ["model/llama3 deleted"]
    assert result.err.splitlines() == [
        "error: backend/gpu-l not found; did you mean 'gpu-1'?",
        "error: pool/spare not found",
    ]
    assert _names(llmctl) == ["backend/gpu-1", "pool/chat", "pool/default"]


def test_ignore_not_found_deletes_the_rest_and_exits_0(llmctl: Cli, tmp_path: pathlib.Path) -> None:
    fleet = _write(tmp_path, SMALL)
    assert llmctl("apply", "-f", fleet).code == 0
    assert llmctl("delete", "-f", fleet).code == 0
    again = llmctl("delete", "-f", fleet, "--ignore-not-found")
    assert (again.code, again.out, again.err) == (0, "", "")


def test_only_kind_and_name_matter_so_any_spec_can_be_deleted_with(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    assert llmctl("apply", "-f", _write(tmp_path, SMALL)).code == 0
    loose = """
kind: Backend
metadata: {name: gpu-1, labels: {zone: a}}
spec: {type: llamacpp, maxPulls: "two", unknown: 1}
---
{apiVersion: llmctl/v9, kind: Model, metadata: {name: "llama3:latest"}}
"""
    result = llmctl("delete", "-f", _write(tmp_path, loose, "loose.yaml"))
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["backend/gpu-1 deleted", "model/llama3:latest deleted"]
    assert _names(llmctl) == ["pool/chat", "pool/default"]


def test_a_file_with_a_document_naming_nothing_deletes_nothing_and_exits_2(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    assert llmctl("apply", "-f", _write(tmp_path, SMALL)).code == 0
    before = dump(database_url)
    bad = SMALL + "---\nkind: Node\nmetadata: {name: n}\n---\nkind: Model\nmetadata: {}\n"
    result = llmctl("delete", "-f", _write(tmp_path, bad, "bad.yaml"))
    assert result.code == 2
    bad_path = tmp_path / "bad.yaml"
    assert result.err.splitlines() == [
        f"error: {bad_path} is not valid, nothing was deleted (2 problems):",
        f"  {bad_path}: document 4: kind: must be one of Backend|Model|Pool|Adapter, not 'Node' (a string)",
        f"  {bad_path}: document 5: metadata.name: is required",
    ]
    assert dump(database_url) == before


def test_delete_f_reads_standard_input_and_directories(llmctl: Cli, tmp_path: pathlib.Path) -> None:
    assert llmctl("apply", "-f", _write(tmp_path, SMALL)).code == 0
    directory = tmp_path / "fleet"
    directory.mkdir()
    (directory / "b.json").write_text('{"kind": "Pool", "metadata": {"name": "chat"}}')
    (directory / "a.yml").write_text("kind: Model\nmetadata: {name: llama3}\n")
    (directory / "notes.txt").write_text("kind: Backend\nmetadata: {name: gpu-1}\n")
    from_dir = llmctl("delete", "-f", str(directory))
    assert from_dir.code == 0, from_dir.err
    assert from_dir.out.splitlines() == ["model/llama3 deleted", "pool/chat deleted"]
    from_stdin = llmctl("delete", "-f", "-", input="kind: Backend\nmetadata: {name: gpu-1}\n")
    assert from_stdin.code == 0, from_stdin.err
    assert from_stdin.out == "backend/gpu-1 deleted\n"
    assert _names(llmctl) == ["pool/default"]


async def test_a_real_delete_asks_a_running_controller_for_a_cycle(
    llmctl: Cli, database_url: str, nats_url: str, nats_prefix: str, tmp_path: pathlib.Path
) -> None:
    fleet = _write(tmp_path, SMALL)
    assert (await asyncio.to_thread(llmctl, "apply", "-f", fleet)).code == 0
    nats_args = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    (trigger,) = await _collect(
        nats_url, f"{nats_prefix}.v1.>", lambda: llmctl(*nats_args, "delete", "-f", fleet), 1
    )
    assert trigger.subject == f"{nats_prefix}.v1.control.trigger"
    body = json.loads(trigger.data)
    assert list(body) == ["request_id"]  # a request recorded in the database before it
    assert cycle_request_ids(database_url) == {body["request_id"]}
