"""The pure parts of the node agent's instances: argv rendering, the restart policy, the record."""

from __future__ import annotations

import json
import pathlib

import pytest

from nodeagent import command, record, restarts


def test_the_default_command_is_vllm_serve_with_every_declared_engine_argument() -> None:
    spec = command.ModelSpec(
        name="qwen",
        path="/cache/qwen",
        engine=command.EngineArgs(
            max_model_len=8192,
            tensor_parallel_size=2,
            gpu_memory_utilization=0.85,
            dtype="bfloat16",
            quantization="awq",
            enable_lora=True,
            extra_args=("--max-loras", "4"),
        ),
    )
    assert command.render(command.DEFAULT_TEMPLATE, spec, "127.0.0.1", 8123) == (
        "vllm", "serve", "/cache/qwen", "--served-model-name", "qwen",
        "--host", "127.0.0.1", "--port", "8123",
        "--max-model-len", "8192", "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.85", "--dtype", "bfloat16", "--quantization", "awq",
        "--enable-lora", "--max-loras", "4",
    )  # fmt: skip
    assert spec.gpu_count == 2


def test_unset_engine_arguments_leave_vllm_defaults_and_one_gpu() -> None:
    spec = command.ModelSpec(name="m", path="/w")
    assert command.render(("serve", "{path}", "{port}"), spec, "h", 1) == ("serve", "/w", "1")
    assert spec.gpu_count == 1


def test_a_model_name_is_one_argument_and_never_filled_again() -> None:
    spec = command.ModelSpec(name="x {port}; rm -rf /", path="/w")
    argv = command.render(command.DEFAULT_TEMPLATE, spec, "127.0.0.1", 9)
    assert argv[4] == "x {port}; rm -rf /"
    assert argv[8] == "9"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (command.ModelSpec(name="", path="/w"), "must be non-empty printable text"),
        (command.ModelSpec(name="a\nb", path="/w"), "must be non-empty printable text"),
        (command.ModelSpec(name="m", path=" "), "the weights path is empty"),
        (
            command.ModelSpec("m", "/w", command.EngineArgs(gpu_memory_utilization=1.5)),
            "gpu_memory_utilization must be in (0, 1], got 1.5",
        ),
        (
            command.ModelSpec("m", "/w", command.EngineArgs(dtype="fp7")),
            "dtype must be one of auto, half",
        ),
        (
            command.ModelSpec("m", "/w", command.EngineArgs(max_model_len=0)),
            "max_model_len must be at least 1",
        ),
    ],
)
def test_a_spec_that_cannot_run_is_refused_naming_the_problem(
    spec: command.ModelSpec, problem: str
) -> None:
    with pytest.raises(command.SpecError) as raised:
        command.check(spec)
    assert problem in str(raised.value)


def test_a_template_without_a_port_is_refused() -> None:
    with pytest.raises(command.SpecError, match=r"must contain \{port\}"):
        command.check_template(("vllm", "serve", "{path}"))


@pytest.mark.parametrize(
    ("crashes", "delay", "looping"),
    [(1, 1.0, False), (2, 2.0, False), (3, 4.0, True), (12, 300.0, True)],
)
def test_restarts_back_off_exponentially_and_crash_loop_after_three(
    crashes: int, delay: float, looping: bool
) -> None:
    policy = restarts.Policy()
    assert policy.delay(crashes) == delay
    assert policy.crash_looping(crashes) is looping


def test_crashes_older_than_the_window_are_forgotten() -> None:
    policy = restarts.Policy(window=60.0)
    assert policy.recent((0.0, 50.0, 100.0), now=100.0) == (50.0, 100.0)


def _entry(name: str = "m") -> record.InstanceRecord:
    return record.InstanceRecord(
        name=name, path="/w", host="127.0.0.1", port=8000, pid=42, pgid=42, proc_start=7,
        gpus=(0, 1), argv=("vllm", "serve"), log="/s/logs/m.log", started_at=1.5,
    )  # fmt: skip


def test_the_record_round_trips_and_leaves_no_temporary_file(tmp_path: pathlib.Path) -> None:
    record.save(tmp_path / "state", [_entry("a"), _entry("b")])
    record.save(tmp_path / "state", [_entry("b")])
    assert record.load(tmp_path / "state") == [_entry("b")]
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["instances.json"]


def test_no_record_file_means_no_instances(tmp_path: pathlib.Path) -> None:
    assert record.load(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "Expecting property name"),
        ('{"version": 9, "instances": []}', "expected an object with version 1"),
        ('{"version": 1, "instances": {}}', "'instances' is not a list"),
        ('{"version": 1, "instances": [{"name": "m"}]}', "field 'path' is missing"),
        ('{"version": 1, "instances": [3]}', "an instance entry is int"),
    ],
)
def test_a_damaged_record_is_refused_naming_the_file_and_the_fix(
    tmp_path: pathlib.Path, text: str, problem: str
) -> None:
    (tmp_path / "instances.json").write_text(text)
    with pytest.raises(record.RecordError) as raised:
        record.load(tmp_path)
    message = str(raised.value)
    assert problem in message
    assert str(tmp_path / "instances.json") in message
    assert "remove the file" in message


def test_a_record_with_a_boolean_port_is_refused(tmp_path: pathlib.Path) -> None:
    data = {"version": 1, "instances": [_entry().to_json() | {"port": True}]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(record.RecordError, match="field 'port'"):
        record.load(tmp_path)


@pytest.mark.parametrize(
    ("argv", "shown", "key"),
    [
        (
            ("vllm", "--api-key", "k1", "k2", "--port", "1"),
            ("vllm", "--api-key", "***", "***", "--port", "1"),
            "k1",
        ),
        (
            ("vllm", "--api-key=k1", "--dtype", "half"),
            ("vllm", "--api-key=***", "--dtype", "half"),
            "k1",
        ),
        (("vllm", "--port", "1"), ("vllm", "--port", "1"), None),
    ],
)
def test_an_api_key_in_the_arguments_is_masked_when_shown_and_found_for_probes(
    argv: tuple[str, ...], shown: tuple[str, ...], key: str | None
) -> None:
    assert command.redacted(argv) == shown
    assert command.api_key(argv) == key
