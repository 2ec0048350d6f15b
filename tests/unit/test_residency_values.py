"""The values issue 16 declares, checked before anything is stored: adapters, keepAlive, sizes."""

from __future__ import annotations

import pytest

from runtimestate.desired import residency, spec


@pytest.mark.parametrize("name", ["sql-lora", "a", "Qwen2.5_sql-v1", "x" * 255])
def test_an_adapter_name_is_what_vllm_serves_it_as(name: str) -> None:
    assert residency.adapter_name(name) == name


@pytest.mark.parametrize("name", ["", "-sql", "org/sql", "sql:v1", "sql lora", "x" * 256, "é"])
def test_an_adapter_name_with_a_slash_colon_or_space_is_refused(name: str) -> None:
    with pytest.raises(spec.SpecError, match="letters, digits"):
        residency.adapter_name(name)


@pytest.mark.parametrize("source", ["/adapters/sql", "/a", "org/sql-lora", "Qwen/Q2.5_x"])
def test_a_source_is_an_absolute_path_or_a_repo_id(source: str) -> None:
    assert residency.source(source) == source


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("/adapters/../etc", "'..'"),
        ("../sql", "'..'"),
        ("adapters", "not a path or repo id"),
        ("a/b/c", "not a path or repo id"),
        ("org/-x", "not a path or repo id"),
        ("/a\nb", "not a path or repo id"),
    ],
)
def test_a_relative_path_or_one_with_dotdot_is_refused(source: str, says: str) -> None:
    with pytest.raises(spec.SpecError, match=says):
        residency.source(source)


def test_a_revision_goes_with_a_repo_id_only() -> None:
    assert residency.revision("main", "org/sql") == "main"
    assert residency.revision("refs/pr/1", "org/sql") == "refs/pr/1"
    with pytest.raises(spec.SpecError, match="only a Hugging Face repo id"):
        residency.revision("main", "/adapters/sql")
    with pytest.raises(spec.SpecError, match="branch, tag or commit"):
        residency.revision("../x", "org/sql")


@pytest.mark.parametrize(
    ("given", "stored"),
    [("5m", "5m"), ("1h30m", "1h30m"), ("-1", "-1"), (-1, "-1"), (300, "300"), ("-1m", "-1m"),
     ("1.5h", "1.5h")],
)  # fmt: skip
def test_keep_alive_takes_ollamas_forms(given: str | int, stored: str) -> None:
    assert residency.keep_alive(given) == stored


@pytest.mark.parametrize("given", ["0", "0s", 0, "soon", "5 m", "1d", "m", True])
def test_keep_alive_zero_or_another_form_is_refused(given: str | int) -> None:
    with pytest.raises(spec.SpecError, match="keepAlive"):
        residency.keep_alive(given)


@pytest.mark.parametrize(
    ("given", "count"),
    [(1000, 1000), ("1000", 1000), ("24GiB", 24 * 2**30), ("20GB", 20 * 10**9),
     ("20 gb", 20 * 10**9), ("1.5TB", 15 * 10**11), ("512MiB", 512 * 2**20), ("3kB", 3000)],
)  # fmt: skip
def test_a_size_is_bytes_or_a_number_with_a_decimal_or_binary_unit(
    given: str | int, count: int
) -> None:
    assert residency.size(given, "vramBytes") == count


@pytest.mark.parametrize("given", [0, -1, "0GB", "24 GiBs", "lots", "1e9", True, 2**63])
def test_a_size_that_is_not_positive_or_has_no_known_unit_is_refused(given: str | int) -> None:
    with pytest.raises(spec.SpecError, match="diskBytes"):
        residency.size(given, "diskBytes")


def test_a_pool_lists_each_adapter_once_sorted() -> None:
    value = residency.validate_pool(spec.PoolSpec("gpu", adapters=("b", "a", "b")))
    assert value.adapters == ("a", "b")
    with pytest.raises(spec.SpecError, match="adapter name"):
        residency.validate_pool(spec.PoolSpec("gpu", adapters=("a/b",)))
