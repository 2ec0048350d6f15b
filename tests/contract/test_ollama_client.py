"""The official sync `ollama.Client` against the Ollama emulator over loopback HTTP."""

from __future__ import annotations

import ollama
import pytest

from emulators import ollama as emulator
from emulators import ollama_inference


def test_list_shows_installed_models_by_their_shortest_name(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)

    listed = client.list()

    assert sorted(str(m.model) for m in listed.models) == ["nomic-embed-text:latest", "qwen2:0.5b"]
    qwen = next(m for m in listed.models if m.model == "qwen2:0.5b")
    assert qwen.details is not None
    assert qwen.details.family == "qwen2"
    assert qwen.size is not None
    assert qwen.size > 300_000_000
    assert qwen.digest is not None
    assert len(qwen.digest) == 64
    assert ":" not in qwen.digest


def test_streamed_pull_reports_every_blob_and_ends_with_success(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)

    statuses = [p.status or "" for p in client.pull("llama3.2:1b", stream=True)]

    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    blob_lines = [s for s in statuses if s.startswith("pulling ") and s != "pulling manifest"]
    assert len({s for s in blob_lines}) == 5  # four layers and the config blob
    assert "llama3.2:1b" in [m.model for m in client.list().models]


def test_pull_without_stream_returns_the_success_object(ollama_thread: emulator.Emulator) -> None:
    client = ollama.Client(host=ollama_thread.url)

    result = client.pull("tinyllama")

    assert result.status == "success"
    assert "tinyllama:latest" in [m.model for m in client.list().models]


def test_show_gives_model_info_with_the_context_length_and_capabilities(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)

    shown = client.show("qwen2:0.5b")

    assert shown.modelinfo is not None
    arch = shown.modelinfo["general.architecture"]
    assert arch == "qwen2"
    assert shown.modelinfo[f"{arch}.context_length"] == 32768
    assert shown.capabilities == ["completion", "tools"]
    assert client.show("nomic-embed-text").capabilities == ["embedding"]


def test_show_of_a_missing_model_raises_404(ollama_thread: emulator.Emulator) -> None:
    client = ollama.Client(host=ollama_thread.url)

    with pytest.raises(ollama.ResponseError) as caught:
        client.show("llama3")

    assert caught.value.status_code == 404
    assert caught.value.error == "model 'llama3:latest' not found"


def test_delete_removes_the_model_and_a_second_delete_is_404(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)

    assert client.delete("qwen2:0.5b").status == "success"

    assert [m.model for m in client.list().models] == ["nomic-embed-text:latest"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("qwen2:0.5b")
    assert caught.value.status_code == 404
    assert caught.value.error == "model 'qwen2:0.5b' not found"


def test_streamed_pull_of_an_unknown_model_raises_with_status_minus_one(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)
    seen: list[str] = []

    with pytest.raises(ollama.ResponseError) as caught:
        seen.extend(p.status or "" for p in client.pull("no-such-model", stream=True))

    assert seen == ["pulling manifest"]
    assert caught.value.status_code == -1
    assert caught.value.error == "pull model manifest: file does not exist"


def test_unstreamed_pull_of_an_unknown_model_raises_500(ollama_thread: emulator.Emulator) -> None:
    client = ollama.Client(host=ollama_thread.url)

    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("no-such-model")

    assert caught.value.status_code == 500
    assert caught.value.error == "pull model manifest: file does not exist"


def test_generate_with_keep_alive_loads_the_model_and_keep_alive_zero_unloads_it(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)
    assert client.ps().models == []

    loaded = client.generate("qwen2:0.5b", "", keep_alive="10m")
    running = client.ps().models
    unloaded = client.generate("qwen2:0.5b", "", keep_alive=0)

    assert loaded.done_reason == "load"
    assert [m.model for m in running] == ["qwen2:0.5b"]
    assert running[0].context_length == 4096
    assert running[0].size_vram == running[0].size
    assert unloaded.done_reason == "unload"
    assert client.ps().models == []


def test_chat_and_embed_load_their_models(ollama_thread: emulator.Emulator) -> None:
    client = ollama.Client(host=ollama_thread.url)

    reply = client.chat("qwen2:0.5b", messages=[{"role": "user", "content": "hi"}])
    vectors = client.embed("nomic-embed-text", ["a", "b"])

    assert reply.message.role == "assistant"
    assert reply.message.content
    assert len(vectors.embeddings) == 2
    assert len(vectors.embeddings[0]) == 768
    assert sorted(str(m.model) for m in client.ps().models) == [
        "nomic-embed-text:latest",
        "qwen2:0.5b",
    ]


def test_streamed_generate_yields_chunks_then_a_done_object(
    ollama_thread: emulator.Emulator,
) -> None:
    client = ollama.Client(host=ollama_thread.url)

    chunks = list(client.generate("qwen2:0.5b", "hello", stream=True))

    assert len(chunks) > 2
    assert [c.done for c in chunks].count(True) == 1
    assert chunks[-1].done
    assert chunks[-1].eval_count is not None
    assert chunks[-1].eval_count > 0
    assert "".join(c.response or "" for c in chunks).strip() == ollama_inference.REPLY


def test_generate_on_an_embedding_model_is_refused(ollama_thread: emulator.Emulator) -> None:
    client = ollama.Client(host=ollama_thread.url)

    with pytest.raises(ollama.ResponseError) as caught:
        client.generate("nomic-embed-text", "hi")

    assert caught.value.status_code == 400
    assert caught.value.error == '"nomic-embed-text" does not support generate'


def test_nodes_are_isolated_and_reachable_through_a_prefixed_host() -> None:
    with emulator.in_thread(nodes=3) as emu:
        clients = [ollama.Client(host=emu.node_url(i)) for i in range(3)]

        clients[1].pull("qwen2:0.5b")

        assert [m.model for m in clients[1].list().models] == ["qwen2:0.5b"]
        assert clients[0].list().models == []
        assert clients[2].list().models == []
        assert emu.nodes[1].requests["POST /api/pull"] == 1
        assert emu.nodes[0].requests["POST /api/pull"] == 0
