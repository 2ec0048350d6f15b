"""A model's engine arguments (``vllm`` block) through the CLI, on SQLite and Postgres."""

from __future__ import annotations

import pathlib

from tests.e2e.conftest import Cli, dump

ADD = (
    "model", "add", "qwen", "--vllm-max-model-len", "8192", "--vllm-tensor-parallel-size", "2",
    "--vllm-gpu-memory-utilization", "0.85", "--vllm-dtype", "bfloat16",
    "--vllm-quantization", "awq", "--vllm-enable-lora", "--vllm-arg", "--enforce-eager",
    "--vllm-arg=--max-num-seqs=8",
)  # fmt: skip


def _model(llmctl: Cli) -> dict[str, object]:
    got = llmctl("model", "get", "qwen", "-o", "json").json()
    assert isinstance(got, dict)
    return got


def test_model_add_declares_engine_arguments_shown_by_get_and_json(llmctl: Cli) -> None:
    added = llmctl(*ADD)
    assert added.code == 0, added.err
    assert _model(llmctl)["vllm"] == {
        "maxModelLen": 8192,
        "tensorParallelSize": 2,
        "gpuMemoryUtilization": 0.85,
        "dtype": "bfloat16",
        "quantization": "awq",
        "enableLora": True,
        "extraArgs": ["--enforce-eager", "--max-num-seqs=8"],
    }
    shown = llmctl("model", "get", "qwen").out
    assert "maxModelLen=8192" in shown
    listed = llmctl("model", "list")
    assert "8192" not in listed.out  # not in the default table


def test_a_model_without_engine_arguments_shows_vllm_null(llmctl: Cli) -> None:
    llmctl("model", "add", "llama3")
    assert llmctl("model", "get", "llama3", "-o", "json").json()["vllm"] is None
    (listed,) = llmctl("model", "list", "-o", "json").json()
    assert listed["vllm"] is None


def test_update_changes_one_engine_argument_and_the_generation_goes_up(llmctl: Cli) -> None:
    llmctl(*ADD)
    updated = llmctl("model", "update", "qwen", "--vllm-gpu-memory-utilization", "0.5")
    assert updated.out.strip() == "model/qwen updated", updated.err
    got = _model(llmctl)
    assert got["generation"] == 2
    vllm = got["vllm"]
    assert isinstance(vllm, dict)
    assert vllm["gpuMemoryUtilization"] == 0.5
    assert vllm["maxModelLen"] == 8192  # the others are kept
    llmctl("model", "update", "qwen", "--vllm-arg", "--enforce-eager", "--vllm-disable-lora")
    vllm = _model(llmctl)["vllm"]
    assert isinstance(vllm, dict)
    assert vllm["extraArgs"] == ["--enforce-eager"]
    assert "enableLora" not in vllm


def test_an_identical_update_leaves_the_generation_alone(llmctl: Cli) -> None:
    llmctl(*ADD)
    same = llmctl("model", "update", "qwen", "--vllm-max-model-len", "8192", "--vllm-dtype",
                  "bfloat16")  # fmt: skip
    assert same.out.strip() == "model/qwen unchanged", same.err
    assert _model(llmctl)["generation"] == 1


def test_no_vllm_clears_the_engine_arguments_and_update_can_add_them(llmctl: Cli) -> None:
    llmctl(*ADD)
    assert llmctl("model", "update", "qwen", "--no-vllm").code == 0
    got = _model(llmctl)
    assert (got["vllm"], got["generation"]) == (None, 2)
    assert llmctl("model", "update", "qwen", "--vllm-max-model-len", "4096").code == 0
    assert _model(llmctl)["vllm"] == {"maxModelLen": 4096}


def test_bad_engine_arguments_exit_2_naming_the_field_and_write_nothing(
    llmctl: Cli, database_url: str
) -> None:
    llmctl(*ADD)
    before = dump(database_url)
    cases = [
        (("model", "add", "x", "--vllm-gpu-memory-utilization", "1.5"),
         "vllm.gpuMemoryUtilization: 1.5 must be a fraction of GPU memory in (0, 1]"),
        (("model", "add", "x", "--vllm-dtype", "bf16"), "vllm.dtype: 'bf16' is not one of"),
        (("model", "add", "x", "--vllm-tensor-parallel-size", "0"),
         "vllm.tensorParallelSize: 0 must be a whole number of GPUs from 1 to 64"),
        (("model", "update", "qwen", "--vllm-arg", "--port"),
         "vllm.extraArgs[0]: --port is set by the node agent itself"),
        (("model", "update", "qwen", "--vllm-gpus", "1"),
         "vllm.gpus: 1 is fewer than tensorParallelSize 2"),
        (("model", "update", "qwen", "--no-vllm", "--vllm-dtype", "half"), "contradict"),
    ]  # fmt: skip
    for args, message in cases:
        result = llmctl(*args)
        assert result.code == 2, (args, result.out)
        assert message in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert dump(database_url) == before


def test_an_api_key_in_an_extra_argument_is_refused_and_never_printed(llmctl: Cli) -> None:
    result = llmctl("model", "add", "x", "--vllm-arg=--api-key=sk-top-secret")
    assert result.code == 2
    assert "--api-key is set by the node agent itself" in result.err
    assert "sk-top-secret" not in result.err + result.out


FILE = """apiVersion: llmctl/v1
kind: Model
metadata:
  name: qwen
spec:
  vllm:
    maxModelLen: 8192
    gpus: 2
    gpuMemoryUtilization: 0.9
    extraArgs: [--enforce-eager]
"""


def test_apply_declares_the_vllm_block_and_export_round_trips_it(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FILE)
    assert llmctl("apply", "-f", str(path)).code == 0
    assert _model(llmctl)["vllm"] == {
        "maxModelLen": 8192,
        "gpus": 2,
        "gpuMemoryUtilization": 0.9,
        "extraArgs": ["--enforce-eager"],
    }
    exported = llmctl("export").out
    again = llmctl("apply", "-f", "-", input=exported)
    assert again.code == 0, again.err
    assert "model/qwen unchanged" in again.out
    assert llmctl("export").out == exported
    assert _model(llmctl)["generation"] == 1


def test_apply_reports_a_vllm_change_and_the_generation_goes_up(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FILE)
    llmctl("apply", "-f", str(path))
    path.write_text(FILE.replace("maxModelLen: 8192", "maxModelLen: 4096"))
    changed = llmctl("apply", "-f", str(path))
    assert "model/qwen changed (vllm)" in changed.out, changed.err
    assert _model(llmctl)["generation"] == 2


def test_a_bad_vllm_block_in_a_file_exits_2_and_writes_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FILE.replace("gpus: 2", "gpus: 2\n    dtype: fp4"))
    before = dump(database_url)
    result = llmctl("apply", "-f", str(path))
    assert result.code == 2
    assert "spec.vllm.dtype: 'fp4' is not one of" in result.err
    assert dump(database_url) == before
