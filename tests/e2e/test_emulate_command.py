"""``llmctl emulate`` as a user runs it, driven by the official ``ollama`` and ``openai`` clients."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import huggingface_hub
import ollama
import openai
import pytest

from emulators import catalog

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


def test_a_catalog_file_spelled_as_the_readme_spells_it_is_served(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "models:\n"
        "  tiny-phi:2b:\n"
        "    layers: [1000, 20]\n"
        "    family: phi\n"
        "    parameter_size: 2.7B\n"
        "    quantization: Q5_K_M\n"
        "    context_length: 2048\n"
        "    capabilities: [completion]\n"
    )
    for url in _start("ollama", "--catalog", str(path), "--installed", "tiny-phi:2b"):
        client = ollama.Client(url, timeout=10)
        (listed,) = client.list().models
        assert listed.model == "tiny-phi:2b"
        assert listed.details is not None
        assert listed.details.quantization_level == "Q5_K_M"
        assert listed.details.parameter_size == "2.7B"
        shown = client.show("tiny-phi:2b")
        assert shown.modelinfo is not None
        assert shown.modelinfo["phi.context_length"] == 2048


BAD_CATALOGS = {
    "an unknown field": (
        "models:\n  tiny:1b:\n    layers: [1000]\n    quantisation: Q4_0\n",
        "model 'tiny:1b': unknown field 'quantisation'; known: layers, family",
    ),
    "layers that are not a list": (
        "models:\n  tiny:1b:\n    layers: 1000\n",
        "model 'tiny:1b': layers: a list of layer sizes in bytes (positive integers), not 1000",
    ),
    "a context length that is not a number": (
        "models:\n  tiny:1b:\n    layers: [1000]\n    context_length: big\n",
        "model 'tiny:1b': context_length: a positive integer, not 'big'",
    ),
    "capabilities that are not a list": (
        "models:\n  tiny:1b:\n    layers: [1000]\n    capabilities: chat\n",
        "model 'tiny:1b': capabilities: a list of words",
    ),
    "no layers": ("models:\n  tiny:1b:\n    family: phi\n", "model 'tiny:1b': has no layers"),
    "fields that are not a mapping": ("models:\n  tiny:1b: 12\n", "give its fields as a mapping"),
    "an invalid model name": ("models:\n  'bad name':\n    layers: [1]\n", "model 'bad name'"),
    "malformed YAML": ("models: [\n", "is not valid YAML"),
    "a list instead of a mapping": ("- tiny\n", "a catalog must be a mapping of models"),
}


@pytest.mark.parametrize("case", list(BAD_CATALOGS))
def test_a_catalog_the_emulator_cannot_use_exits_2_naming_the_file_and_field(
    tmp_path: pathlib.Path, case: str
) -> None:
    text, message = BAD_CATALOGS[case]
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    done = subprocess.run(
        [LLMCTL, "emulate", "ollama", "--port", "0", "--catalog", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""  # it never listened
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: catalog {path}"), done.stderr
    assert message in done.stderr, done.stderr


def test_an_installed_model_missing_from_the_catalog_exits_2_listing_the_built_in_names() -> None:
    done = subprocess.run(
        [LLMCTL, "emulate", "ollama", "--port", "0", "--installed", "no-such:1b"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "--installed: model 'no-such:1b' is not in the catalog; it has: qwen2:0.5b" in (
        done.stderr
    )
    for name in catalog.builtin_names():
        assert name in done.stderr


def test_the_hub_emulator_serves_declared_repos_to_huggingface_hub(tmp_path: pathlib.Path) -> None:
    for url in _start("hub", "--repo", "org/tiny=3000", "--repo", "solo=5"):
        snapshot = pathlib.Path(
            huggingface_hub.snapshot_download(
                "org/tiny", cache_dir=tmp_path, endpoint=url, token=False
            )
        )
        assert (snapshot / "model.safetensors").stat().st_size == 3000
        assert (snapshot / "config.json").read_bytes() == b"{}"


def test_a_bad_hub_repo_exits_2_naming_the_expected_form() -> None:
    done = subprocess.run(
        [LLMCTL, "emulate", "hub", "--repo", "org/tiny", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "expected ORG/NAME=BYTES" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_openai_client_talks_to_ollamas_v1_paced_by_the_ttft_flag() -> None:
    for url in _start("ollama", "--installed", "qwen2:0.5b", "--ttft", "0.2"):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="ignored", timeout=10)
        started = time.monotonic()
        reply = client.chat.completions.create(
            model="qwen2:0.5b", messages=[{"role": "user", "content": "hi"}]
        )
        elapsed = time.monotonic() - started
        (card,) = client.models.list().data
        state = httpx.get(f"{url}/_emulator/state").json()["nodes"][0]

        assert reply.choices[0].message.content
        assert elapsed >= 0.2
        assert card.id == "qwen2:0.5b"
        assert (state["ttft"], state["token_delay"]) == (0.2, 0.0)


def test_the_vllm_emulator_streams_completions_paced_by_the_token_delay_flag() -> None:
    for url in _start("vllm", "--served-model-name", "my-model", "--token-delay", "0.02"):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=10)
        started = time.monotonic()
        chunks = list(client.completions.create(model="my-model", prompt="hi", stream=True))
        elapsed = time.monotonic() - started

        assert "".join(c.choices[0].text for c in chunks).strip()
        assert elapsed >= 0.02 * (len(chunks) - 2)
        assert httpx.get(f"{url}/_emulator/state").json()["nodes"][0]["token_delay"] == 0.02
