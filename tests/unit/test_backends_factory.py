"""`backends.create`: one adapter per backend type, configuration errors at construction."""

from __future__ import annotations

import pytest

from runtimestate import backends, errors
from runtimestate.backends import base, gemini, ollama, openai, vllm
from runtimestate.desired import spec


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("ollama", ollama.OllamaBackend),
        ("OLLAMA", ollama.OllamaBackend),
        (spec.BackendType.VLLM, vllm.VllmBackend),
        ("openai", openai.OpenAIBackend),
        (" Gemini ", gemini.GeminiBackend),
    ],
)
async def test_create_builds_the_adapter_for_each_type(kind: str, cls: type[object]) -> None:
    adapter = backends.create(kind, "http://127.0.0.1:9/x", name="b1")
    try:
        assert type(adapter) is cls
        assert adapter.name == "b1"
        assert isinstance(adapter, base.Observer)
    finally:
        await adapter.aclose()


def test_create_refuses_an_unknown_type() -> None:
    with pytest.raises(errors.ConfigurationError):
        backends.create("triton", "http://127.0.0.1:9")


def test_create_refuses_a_url_with_credentials_without_echoing_them() -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        backends.create("vllm", "http://admin:hunter2@127.0.0.1:9")
    assert "hunter2" not in str(caught.value)


async def test_the_default_name_is_host_and_path_without_credentials() -> None:
    adapter = backends.create("ollama", "http://127.0.0.1:9000/nodes/17/")
    try:
        assert adapter.name == "127.0.0.1:9000/nodes/17"
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("field", ["connect", "read", "stall", "total"])
def test_timeouts_must_be_positive(field: str) -> None:
    with pytest.raises(errors.ConfigurationError):
        base.Timeouts(**{field: 0})


def test_only_ollama_can_pull_and_delete() -> None:
    assert ollama.OllamaBackend.capabilities.can_pull
    assert ollama.OllamaBackend.capabilities.can_delete
    for cls in (vllm.VllmBackend, openai.OpenAIBackend, gemini.GeminiBackend):
        assert not cls.capabilities.can_pull
        assert not cls.capabilities.can_delete
