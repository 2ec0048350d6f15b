"""``backend get`` shows the sizes of the models a backend holds as people read them."""

from __future__ import annotations

from controller import output
from emulators import ollama
from tests.e2e.conftest import Cli


def test_backend_get_shows_model_sizes_in_human_units_and_bytes_in_wide_and_json(
    llmctl: Cli,
) -> None:
    with ollama.in_thread(nodes=1, installed=["qwen2:0.5b"]) as emu:
        added = llmctl("backend", "add", "gpu-0", "--url", emu.node_url(0), "--type", "ollama",
                       "--no-pool")  # fmt: skip
        assert added.code == 0, added.err
        observed = llmctl("reconcile", "--once")
        assert observed.code == 0, observed.out + observed.err
    (model,) = llmctl("backend", "get", "gpu-0", "-o", "json").json()["status"]["models"]
    assert isinstance(model["size"], int)
    assert model["size"] > 100_000_000
    human = output.size(model["size"])
    assert human.endswith(" MB")

    table = llmctl("backend", "get", "gpu-0").out
    (row,) = [line for line in table.splitlines() if line.startswith("qwen2:0.5b")]
    assert human in row
    assert str(model["size"]) not in row
    wide = llmctl("backend", "get", "gpu-0", "-o", "wide").out
    (row,) = [line for line in wide.splitlines() if line.startswith("qwen2:0.5b")]
    assert str(model["size"]) in row
    assert llmctl("backend", "get", "gpu-0", "-o", "yaml").out.count(f"size: {model['size']}") == 1
