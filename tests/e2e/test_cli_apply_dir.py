"""``llmctl apply -f DIR``: every manifest of a directory, checked whole, in one transaction."""

from __future__ import annotations

import json
import pathlib

from tests.e2e.conftest import Cli, dump

BACKENDS = """
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-1}
spec: {type: ollama, url: "http://h:1"}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-2}
spec: {type: ollama, url: "http://h:2"}
"""
MODELS = """
apiVersion: llmctl/v1
kind: Model
metadata: {name: llama3}
"""
POOL = {
    "apiVersion": "llmctl/v1",
    "kind": "Pool",
    "metadata": {"name": "chat"},
    "spec": {"backends": ["gpu-1", "gpu-2"], "models": ["llama3"]},
}


def _fleet(tmp_path: pathlib.Path, **files: str) -> pathlib.Path:
    directory = tmp_path / "fleet"
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", ".")).write_text(text)
    return directory


def test_apply_f_dir_applies_every_manifest_in_it_as_one_file(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    # The pool (in c.json) names members declared in the other files: all are read as one.
    directory = _fleet(
        tmp_path, a_yaml=BACKENDS, b_yml=MODELS, c_json=json.dumps(POOL), README_md="# no"
    )
    (directory / "later").mkdir()
    (directory / "later" / "d.yaml").write_text(MODELS.replace("llama3", "qwen2"))
    result = llmctl("apply", "-f", str(directory))
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "backend/gpu-1 created",
        "backend/gpu-2 created",
        "model/llama3 created",
        "pool/chat created",
    ]
    assert llmctl("pool", "get", "chat", "-o", "json").json()["backends"] == ["gpu-1", "gpu-2"]
    recursive = llmctl("apply", "-f", str(directory), "-R")
    assert recursive.code == 0, recursive.err
    assert "model/qwen2 created" in recursive.out.splitlines()


def test_a_bad_document_in_one_file_of_a_directory_applies_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    directory = _fleet(tmp_path, a_yaml=BACKENDS, b_yaml=MODELS + "spec: {contextLength: 0}\n")
    before = dump(database_url)
    result = llmctl("apply", "-f", str(directory))
    assert result.code == 2
    assert result.err.splitlines() == [
        f"error: {directory} is not valid, nothing was applied (1 problem):",
        f"  {directory / 'b.yaml'}: document 1 (Model llama3): spec.contextLength: 0 must be a "
        "positive whole number of tokens",
    ]
    assert dump(database_url) == before


def test_a_name_declared_in_two_files_is_refused_naming_both(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    directory = _fleet(tmp_path, a_yaml=MODELS, b_yaml=BACKENDS + "---" + MODELS)
    before = dump(database_url)
    result = llmctl("apply", "-f", str(directory))
    assert result.code == 2
    assert (
        f"  {directory / 'a.yaml'}: document 1 and {directory / 'b.yaml'}: document 3 both "
        "declare Model 'llama3:latest'; declare each once, in one file"
    ) in result.err.splitlines()
    assert dump(database_url) == before


def test_a_directory_with_no_manifests_is_an_error_saying_so(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    directory = _fleet(tmp_path, notes_txt="kind: Model\n")
    before = dump(database_url)
    result = llmctl("apply", "-f", str(directory))
    assert result.code == 2
    assert result.err == (
        f"error: {directory}: no manifests found: no *.yaml, *.yml or *.json file in the "
        "directory (add -R for its subdirectories)\n"
    )
    assert dump(database_url) == before


def test_json_files_hold_a_document_a_list_or_a_kind_list(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    backends = [
        {"apiVersion": "llmctl/v1", "kind": "Backend", "metadata": {"name": f"gpu-{i}"},
         "spec": {"type": "ollama", "url": f"http://h:{i}"}}
        for i in (1, 2)
    ]  # fmt: skip
    model = {"apiVersion": "llmctl/v1", "kind": "Model", "metadata": {"name": "llama3"}}
    files = {
        "a_json": json.dumps(backends),
        "b_json": json.dumps(model),
        "c_json": json.dumps({"apiVersion": "v1", "kind": "List", "items": [POOL]}),
    }
    result = llmctl("apply", "-f", str(_fleet(tmp_path, **files)))
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 4
    assert llmctl("pool", "get", "chat", "-o", "json").json()["models"] == ["llama3"]


def test_a_json_file_that_does_not_parse_names_the_line_and_column(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.json"
    path.write_text('[\n  {"kind": "Model",}\n]')
    result = llmctl("apply", "-f", str(path))
    assert result.code == 2
    assert f"{path}: is not valid JSON at line 2, column 20" in result.err


def test_f_may_be_repeated_and_the_files_apply_together(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    directory = _fleet(tmp_path, a_yaml=BACKENDS)
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(POOL))
    result = llmctl("apply", "-f", str(directory), "-f", "-", "-f", str(pool), input=MODELS)
    assert result.code == 0, result.err
    assert result.out.splitlines()[-2:] == ["model/llama3 created", "pool/chat created"]


def test_an_empty_f_or_standard_input_twice_is_refused_and_applies_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    _fleet(tmp_path, a_yaml=BACKENDS)
    before = dump(database_url)
    for command in ("apply", "delete"):
        empty = llmctl(command, "-f", "")
        assert (empty.code, empty.out) == (2, "")
        assert "-f needs a file, a directory or - (standard input)" in empty.err
        twice = llmctl(command, "-f", "-", "-f", "-", input=MODELS)
        assert (twice.code, twice.err) == (2, "error: -f - (standard input) can be given once\n")
    assert dump(database_url) == before
