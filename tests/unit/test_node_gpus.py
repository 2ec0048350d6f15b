"""The node agent's GPU inventory: the declared ``--gpus`` forms, NVML, and placement."""

from __future__ import annotations

import types
from typing import Any

import pytest

from nodeagent import gpus

GIB = 2**30


@pytest.mark.parametrize(
    ("text", "memories"),
    [
        ("2x80GiB", [80 * GIB, 80 * GIB]),
        ("1x24GB", [24 * 10**9]),
        ("1X24gb", [24 * 10**9]),
        ("3 x 16GiB", [16 * GIB] * 3),
        ("80GiB,40GiB", [80 * GIB, 40 * GIB]),
        ("80GiB, 40 GiB", [80 * GIB, 40 * GIB]),
        ("512MiB", [512 * 2**20]),
        ("1.5TiB", [int(1.5 * 2**40)]),
    ],
)
def test_a_declared_inventory_lists_one_gpu_per_count_or_item(
    text: str, memories: list[int]
) -> None:
    declared = gpus.parse(text)
    assert [gpu.memory_bytes for gpu in declared] == memories
    assert [gpu.index for gpu in declared] == list(range(len(memories)))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "--gpus is empty"),
        ("2x80", "'80' is not a memory size with a unit"),
        ("2x80GiBs", "'80gibs' is not a memory size"),
        ("0x80GiB", "the count must be at least 1"),
        ("two GPUs", "'two gpus' is not a memory size"),
        ("80GiB,,40GiB", "'' is not a memory size"),
        ("0GiB", "must be more than 0"),
    ],
)
def test_a_bad_declared_inventory_names_the_problem_and_the_accepted_forms(
    text: str, problem: str
) -> None:
    with pytest.raises(gpus.InventoryError) as raised:
        gpus.parse(text)
    assert problem in str(raised.value)
    assert "2x80GiB" in str(raised.value)
    assert "80GiB,40GiB" in str(raised.value)


class _FakeNvmlError(Exception):
    pass


def _nvml(count: int, *, init_fails: bool = False) -> Any:
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_fails:
            raise _FakeNvmlError("NVML Shared Library Not Found")

    return types.SimpleNamespace(
        NVMLError=_FakeNvmlError,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=(h + 1) * 40 * GIB),
        nvmlDeviceGetName=lambda h: b"NVIDIA A100-SXM4-80GB",
        calls=calls,
    )


def test_nvml_gpus_carry_their_index_memory_and_name_and_nvml_is_shut_down() -> None:
    nvml = _nvml(2)
    found = gpus.from_nvml(nvml)
    assert found == (
        gpus.Gpu(0, 40 * GIB, "NVIDIA A100-SXM4-80GB"),
        gpus.Gpu(1, 80 * GIB, "NVIDIA A100-SXM4-80GB"),
    )
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_without_a_driver_tells_the_operator_to_declare_gpus() -> None:
    with pytest.raises(gpus.InventoryError) as raised:
        gpus.from_nvml(_nvml(0, init_fails=True))
    assert "NVML Shared Library Not Found" in str(raised.value)
    assert "--gpus 2x80GiB" in str(raised.value)


@pytest.mark.parametrize(
    ("declared", "taken", "need", "placed"),
    [
        ("2x80GiB", [], gpus.Need(1), (0,)),
        ("2x80GiB", [0], gpus.Need(1), (1,)),
        ("4x80GiB", [1], gpus.Need(2), (0, 2)),
        ("24GiB,80GiB", [], gpus.Need(1, 40 * GIB), (1,)),
        ("80GiB,80GiB", [], gpus.Need(2, 80 * GIB), (0, 1)),
    ],
)
def test_placement_takes_the_lowest_free_gpus_with_enough_memory(
    declared: str, taken: list[int], need: gpus.Need, placed: tuple[int, ...]
) -> None:
    assert gpus.place(gpus.parse(declared), taken, need) == placed


@pytest.mark.parametrize(
    ("declared", "taken", "need", "message"),
    [
        ("1x24GiB", [0], gpus.Need(1), "needs 1 GPU, 0 free"),
        ("2x80GiB", [0], gpus.Need(2), "needs 2 GPUs, 1 free"),
        ("80GiB,24GiB", [], gpus.Need(2, 40 * GIB), "needs 2 GPUs with 40 GiB, 1 free"),
        ("1x16GiB", [], gpus.Need(1, int(23.5 * GIB)), "needs 1 GPU with 23.5 GiB, 0 free"),
    ],
)
def test_a_need_that_does_not_fit_says_why_with_numbers(
    declared: str, taken: list[int], need: gpus.Need, message: str
) -> None:
    with pytest.raises(gpus.Unplaceable) as raised:
        gpus.place(gpus.parse(declared), taken, need)
    assert str(raised.value) == message


def test_the_inventory_never_gives_one_gpu_to_two_holders_and_release_frees_it() -> None:
    inventory = gpus.Inventory(gpus.parse("1x80GiB"))
    assert inventory.assign("a", gpus.Need(1)) == (0,)
    assert inventory.assign("a", gpus.Need(1)) == (0,)
    with pytest.raises(gpus.Unplaceable, match="needs 1 GPU, 0 free"):
        inventory.assign("b", gpus.Need(1))
    with pytest.raises(gpus.Unplaceable, match="already held by 'a'"):
        inventory.claim("b", [0])
    inventory.release("a")
    assert inventory.assign("b", gpus.Need(1)) == (0,)
    assert inventory.holders() == {"b": (0,)}
    assert inventory.free() == ()


def test_claiming_a_gpu_the_node_does_not_have_is_refused() -> None:
    inventory = gpus.Inventory(gpus.parse("1x80GiB"))
    with pytest.raises(gpus.Unplaceable, match="GPU 3 is not in this node's inventory"):
        inventory.claim("a", [3])
    assert inventory.holders() == {}


def test_nvml_on_this_host_without_gpus_tells_the_operator_to_declare_them() -> None:
    # Either nvidia-ml-py is missing or it finds no driver: both name the way out.
    with pytest.raises(gpus.InventoryError, match=r"declare them with --gpus 2x80GiB"):
        gpus.from_nvml()
