"""Emulator model bookkeeping: catalog, keep-alive, timestamps, versions, disk."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from emulators import catalog, downloads, names, ollama_node, timestamps, vllm_node

MINUTE = 60 * 10**9


def test_digests_are_deterministic_and_differ_between_models() -> None:
    first = catalog.Catalog().get(names.parse("qwen2:0.5b"))
    again = catalog.Catalog().get(names.parse("QWEN2:0.5b"))
    other = catalog.Catalog().get(names.parse("llama3"))
    assert first is not None
    assert again is not None
    assert other is not None

    assert first.digest == again.digest
    assert re.fullmatch(r"[0-9a-f]{64}", first.digest)
    assert first.blobs == again.blobs
    assert first.digest != other.digest
    assert first.size == sum(b.size for b in first.blobs)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_catalog_file_in_json_or_yaml_is_loaded(tmp_path: pathlib.Path, suffix: str) -> None:
    data = {
        "models": {"Tiny": {"layers": [100, 20], "family": "phi", "capabilities": ["completion"]}}
    }
    path = tmp_path / f"catalog{suffix}"
    path.write_text(json.dumps(data))  # JSON is valid YAML

    spec = catalog.load(path).get(names.parse("tiny"))

    assert spec is not None
    assert spec.name == "Tiny:latest"
    assert spec.size == 120 + catalog.CONFIG_BLOB_SIZE
    assert spec.model_info()["phi.context_length"] == 4096


def test_a_catalog_model_without_layers_is_refused() -> None:
    with pytest.raises(ValueError, match="no layers"):
        catalog.from_mapping({"models": {"x": {"family": "llama"}}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 5 * MINUTE),
        ("10m", 10 * MINUTE),
        ("1h30m", 90 * MINUTE),
        ("1.5s", 1_500_000_000),
        ("0", 0),
        (0, 0),
        (30, 30 * 10**9),
        (-1, None),
        ("-1m", None),
    ],
)
def test_keep_alive_accepts_go_durations_and_seconds(value: object, expected: int | None) -> None:
    assert ollama_node.keep_alive_ns(value) == expected


@pytest.mark.parametrize("value", ["5 minutes", "m", True])
def test_keep_alive_rejects_what_go_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid"):
        ollama_node.keep_alive_ns(value)


def test_loaded_models_expire_by_the_injected_clock() -> None:
    now = [10**18]
    node = ollama_node.OllamaNode(0, catalog.Catalog(), ["qwen2:0.5b"], clock=lambda: now[0])
    spec = node.installed[names.parse("qwen2:0.5b").key].spec

    node.load(spec, "1m", None)
    assert [m.spec.name for m in node.running()] == ["qwen2:0.5b"]
    now[0] += 2 * MINUTE

    assert node.running() == []


def test_timestamps_have_nanoseconds_without_trailing_zeros() -> None:
    assert timestamps.rfc3339_nano(1_700_000_000_120_000_000, utc=True) == "2023-11-14T22:13:20.12Z"
    assert timestamps.rfc3339_nano(1_700_000_000_000_000_001, utc=True).endswith(".000000001Z")


@pytest.mark.parametrize(
    ("text", "parsed"), [("0.33.0", (0, 33, 0)), ("0.10.1rc1", (0, 10, 1)), ("v0.9", (0, 9, 0))]
)
def test_vllm_versions_parse_to_tuples(text: str, parsed: tuple[int, int, int]) -> None:
    assert vllm_node.version_tuple(text) == parsed


def test_disk_room_counts_complete_and_partial_blobs() -> None:
    disk = downloads.Disk(capacity=1000)
    disk.complete["sha256:a"] = 300
    disk.partial["sha256:b"] = 200

    assert disk.used() == 500
    assert disk.room() == 500
    assert downloads.Disk().room() is None


def test_the_readme_lists_every_built_in_emulator_model() -> None:
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Emulators: `llmctl emulate`")[1].split("\n## ")[0]
    for name in catalog.builtin_names():
        assert f"`{name}`" in section, name
