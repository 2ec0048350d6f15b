"""Fixtures for the contract tests: emulators listening on loopback, real HTTP.

The async fixtures serve in the test's event loop (for `ollama.AsyncClient`, `openai.AsyncOpenAI`
and httpx); the `*_thread` fixtures serve from a background thread, for the blocking
`ollama.Client` and `openai.OpenAI`. Pulls are instant unless a test sets a rate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from emulators import hfhub, ollama, vllm

INSTALLED = ["qwen2:0.5b", "nomic-embed-text"]


@pytest.fixture
async def ollama_emu() -> AsyncIterator[ollama.Emulator]:
    """One Ollama node with a chat model and an embedding model installed."""
    async with ollama.running(installed=INSTALLED) as emu:
        yield emu


@pytest.fixture
def ollama_thread() -> Iterator[ollama.Emulator]:
    """The same node, served from a background thread for the sync client."""
    with ollama.in_thread(installed=INSTALLED) as emu:
        yield emu


@pytest.fixture
async def vllm_emu() -> AsyncIterator[vllm.Emulator]:
    """One current (0.33) vLLM node serving `my-model`."""
    async with vllm.running(served_model_names=["my-model"], max_model_len=4096) as emu:
        yield emu


@pytest.fixture
def vllm_thread() -> Iterator[vllm.Emulator]:
    """A vLLM node served from a background thread for the sync openai client."""
    with vllm.in_thread(served_model_names=["my-model"], max_model_len=4096) as emu:
        yield emu


MIB = 1024 * 1024
HUB_REPOS = [
    hfhub.RepoSpec(
        "org/tiny",
        {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model.safetensors": 24 * MIB},
    ),
    hfhub.RepoSpec(
        "org/gated", {"model.safetensors": 1000}, gated=True, tokens=frozenset({"hf_ok"})
    ),
    hfhub.RepoSpec("org/private", {"model.bin": 10}, private=True, tokens=frozenset({"hf_ok"})),
]


@pytest.fixture
def hub_thread() -> Iterator[hfhub.Emulator]:
    """The emulated Hugging Face Hub with a public, a gated and a private repo, on a thread
    (huggingface_hub's client is blocking)."""
    with hfhub.in_thread(repos=HUB_REPOS) as emu:
        yield emu
