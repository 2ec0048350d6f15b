"""A model's ``vllm`` block: each engine argument's range, its messages, its file form."""

from __future__ import annotations

import pytest

from runtimestate.desired import engineargs, manifest, spec

Args = engineargs.VllmArgs


def _refused(args: Args) -> str:
    with pytest.raises(spec.SpecError) as info:
        spec.vllm_args(args)
    return str(info.value)


def test_every_declared_engine_argument_is_kept_and_a_whole_utilization_becomes_a_fraction() -> (
    None
):
    args = Args(
        max_model_len=32768, tensor_parallel_size=2, gpus=4, gpu_memory_utilization=1,
        dtype="bfloat16", quantization="awq_marlin", enable_lora=True,
        extra_args=("--enforce-eager", "--max-num-seqs=8"),
    )  # fmt: skip
    checked = spec.vllm_args(args)
    assert checked == args
    assert checked is not None
    assert isinstance(checked.gpu_memory_utilization, float)
    assert spec.vllm_args(None) is None
    assert spec.vllm_args(Args()) == Args()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (Args(max_model_len=0), "vllm.maxModelLen: 0 must be a whole number of tokens from 1 to 100000000"),
        (Args(max_model_len=100_000_001), "vllm.maxModelLen: 100000001 must be a whole number"),
        (Args(tensor_parallel_size=0), "vllm.tensorParallelSize: 0 must be a whole number of GPUs from 1 to 64"),
        (Args(tensor_parallel_size=65), "vllm.tensorParallelSize: 65 must be a whole number of GPUs"),
        (Args(gpus=-1), "vllm.gpus: -1 must be a whole number of GPUs from 0 to 64"),
        (Args(gpus=2, tensor_parallel_size=4), "vllm.gpus: 2 is fewer than tensorParallelSize 4"),
        (Args(gpu_memory_utilization=0.0), "vllm.gpuMemoryUtilization: 0.0 must be a fraction of GPU memory in (0, 1]"),
        (Args(gpu_memory_utilization=1.01), "vllm.gpuMemoryUtilization: 1.01 must be a fraction"),
        (Args(gpu_memory_utilization=float("nan")), "vllm.gpuMemoryUtilization: nan must be a fraction"),
        (Args(dtype="bf16"), "vllm.dtype: 'bf16' is not one of auto|half|float16|bfloat16|float|float32"),
        (Args(quantization="AWQ 4bit"), "vllm.quantization: 'AWQ 4bit' is not a vLLM quantization method name"),
        (Args(extra_args=("",)), "vllm.extraArgs[0]: must be non-empty printable text"),
        (Args(extra_args=("--a", "x\ny")), "vllm.extraArgs[1]: must be non-empty printable text"),
        (Args(extra_args=("x" * 1001,)), "vllm.extraArgs[0]: must be at most 1000 characters"),
        (Args(extra_args=("--port", "9000")), "vllm.extraArgs[0]: --port is set by the node agent itself"),
        (Args(extra_args=("--host=0.0.0.0",)), "vllm.extraArgs[0]: --host is set by the node agent"),
        (Args(extra_args=("--served-model-name", "x")), "vllm.extraArgs[0]: --served-model-name is set"),
        (Args(max_model_len=8, extra_args=("--max-model-len=9",)), "vllm.extraArgs[0]: --max-model-len is also declared as maxModelLen"),
        (Args(enable_lora=True, extra_args=("--enable-lora",)), "vllm.extraArgs[0]: --enable-lora is also declared as enableLora"),
    ],
)  # fmt: skip
def test_a_bad_engine_argument_is_refused_naming_the_field_and_the_valid_range(
    args: Args, message: str
) -> None:
    assert message in _refused(args)


def test_an_extra_argument_may_repeat_a_flag_whose_field_is_not_declared() -> None:
    args = Args(extra_args=("--max-model-len", "auto", "--quantization=fp8"))
    assert spec.vllm_args(args) == args


def test_an_api_key_in_the_extra_arguments_is_refused_without_echoing_it() -> None:
    message = _refused(Args(extra_args=("--api-key=sk-very-secret",)))
    assert "--api-key is set by the node agent itself" in message
    assert "sk-very-secret" not in message


def test_the_file_form_shows_only_declared_fields_and_reads_back_equal() -> None:
    args = Args(max_model_len=8192, gpu_memory_utilization=0.85, extra_args=("--enforce-eager",))
    shown = engineargs.document(args)
    assert shown == {
        "maxModelLen": 8192,
        "gpuMemoryUtilization": 0.85,
        "extraArgs": ["--enforce-eager"],
    }
    assert engineargs.from_document(shown) == args
    assert engineargs.document(Args()) == {}


MODEL = """
apiVersion: llmctl/v1
kind: Model
metadata: {name: qwen}
spec:
  vllm: %s
"""


def test_a_files_vllm_block_reads_into_the_model_spec() -> None:
    block = (
        "{maxModelLen: 4096, tensorParallelSize: 2, gpus: 2, gpuMemoryUtilization: 1, "
        "dtype: half, quantization: gptq, enableLora: true, extraArgs: [--enforce-eager]}"
    )
    (model,) = manifest.parse(MODEL % block).models
    assert model.vllm == Args(4096, 2, 2, 1.0, "half", "gptq", True, ("--enforce-eager",))


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("[maxModelLen]", "spec.vllm: must be a mapping (key: value), not a list"),
        ("{maxModelLen: '8k'}", "spec.vllm.maxModelLen: must be a whole number, not '8k' (a string)"),
        ("{tensorParallelSize: 1.5}", "spec.vllm.tensorParallelSize: must be a whole number, not 1.5"),
        ("{gpus: true}", "spec.vllm.gpus: must be a whole number, not true (a boolean)"),
        ("{gpuMemoryUtilization: '0.9'}", "spec.vllm.gpuMemoryUtilization: must be a number, not '0.9'"),
        ("{gpuMemoryUtilization: 2}", "spec.vllm.gpuMemoryUtilization: 2.0 must be a fraction of GPU memory in (0, 1]"),
        ("{dtype: 16}", "spec.vllm.dtype: must be a string, not 16 (a whole number)"),
        ("{enableLora: 'yes'}", "spec.vllm.enableLora: must be true or false, not 'yes' (a string)"),
        ("{extraArgs: --enforce-eager}", "spec.vllm.extraArgs: must be a list, not '--enforce-eager'"),
        ("{extraArgs: [--port, 1]}", "spec.vllm.extraArgs[1]: must be a string, not 1 (a whole number)"),
        ("{extraArgs: [--port, '1']}", "spec.vllm.extraArgs[0]: --port is set by the node agent itself"),
        ("{maxModelLength: 8}", "spec.vllm.maxModelLength: is not a field of vllm (known: maxModelLen,"),
    ],
)  # fmt: skip
def test_a_bad_vllm_block_in_a_file_names_the_field_as_written(block: str, problem: str) -> None:
    with pytest.raises(manifest.ManifestError) as info:
        manifest.parse(MODEL % block)
    assert any(problem in line for line in info.value.problems), info.value.problems


def test_every_problem_of_a_vllm_block_is_reported_at_once() -> None:
    with pytest.raises(manifest.ManifestError) as info:
        manifest.parse(MODEL % "{maxModelLen: 0, dtype: fp4, extraArgs: [--api-key=k]}")
    assert len(info.value.problems) == 3, info.value.problems
