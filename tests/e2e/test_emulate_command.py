"""``llmctl emulate`` as a user runs it, driven by the official ``ollama`` and ``openai`` clients."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(*args: str) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [LLMCTL, "emulate", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in banner, banner
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def ollama_url() -> Iterator[str]:
    yield from _start("ollama", "--installed", "qwen2:0.5b")


@pytest.fixture
def vllm_url() -> Iterator[str]:
    yield from _start("vllm", "--served-model-name", "my-model", "--max-model-len", "4096")


def test_the_official_ollama_client_lists_pulls_shows_and_deletes(ollama_url: str) -> None:
    client = ollama.Client(ollama_url, timeout=10)
    assert [m.model for m in client.list().models] == ["qwen2:0.5b"]
    statuses = [p.status for p in client.pull("llama3.2:1b", stream=True)]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert {m.model for m in client.list().models} == {"qwen2:0.5b", "llama3.2:1b"}
    shown = client.show("llama3.2:1b")
    assert shown.modelinfo is not None
    architecture = shown.modelinfo["general.architecture"]
    assert shown.modelinfo[f"{architecture}.context_length"] > 0
    assert shown.capabilities is not None
    assert "completion" in shown.capabilities
    assert client.delete("llama3.2:1b").status == "success"
    assert [m.model for m in client.list().models] == ["qwen2:0.5b"]


def test_an_unknown_model_fails_as_ollama_says(ollama_url: str) -> None:
    client = ollama.Client(ollama_url, timeout=10)
    with pytest.raises(ollama.ResponseError) as streamed:
        for _ in client.pull("no-such-model:1b", stream=True):
            pass
    assert streamed.value.status_code == -1
    assert streamed.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as whole:
        client.pull("no-such-model:1b")
    assert whole.value.status_code == 500


def test_the_official_openai_client_talks_to_the_vllm_emulator(vllm_url: str) -> None:
    client = openai.OpenAI(base_url=f"{vllm_url}/v1", api_key="unused", timeout=10)
    (card,) = client.models.list().data
    assert card.id == "my-model"
    reply = client.chat.completions.create(
        model="my-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="my-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert httpx.get(f"{vllm_url}/health").text == ""
