"""Declared model overrides as the CLI shows them, on every backend that serves the model."""

from __future__ import annotations

from emulators import ollama
from tests.e2e.conftest import Cli


def _ok(llmctl: Cli, *args: str) -> None:
    result = llmctl(*args)
    assert result.code == 0, result.out + result.err


def test_a_declared_override_shows_on_a_backend_that_serves_but_does_not_desire_the_model(
    llmctl: Cli,
) -> None:
    with ollama.in_thread(nodes=2, installed=["qwen2:0.5b"]) as emu:
        _ok(llmctl, "backend", "add", "gpu-0", "--type", "ollama", "--url", emu.node_url(0))
        _ok(
            llmctl,
            "backend",
            "add",
            "gpu-1",
            "--type",
            "ollama",
            "--url",
            emu.node_url(1),
            "--no-pool",
        )
        _ok(
            llmctl, "model", "add", "qwen2:0.5b", "--capability", "chat", "--context-length", "4096"
        )
        _ok(llmctl, "reconcile", "--once")
        for name, desired in (("gpu-0", ["qwen2:0.5b"]), ("gpu-1", [])):
            got = llmctl("backend", "get", name, "-o", "json").json()
            assert got["desiredModels"] == desired
            assert [(m["name"], m["contextLength"]) for m in got["status"]["models"]] == [
                ("qwen2:0.5b", 4096)
            ]
        chosen = llmctl("resolve", "qwen2:0.5b", "-o", "json").json()
        providers = [chosen["provider"], *chosen["fallbacks"]]
        assert sorted((p["backend"], tuple(p["capabilities"])) for p in providers) == [
            ("gpu-0", ("chat",)),
            ("gpu-1", ("chat",)),
        ]
        refused = llmctl("resolve", "qwen2:0.5b", "--capability", "prompt")
        assert refused.code == 1, refused.out + refused.err
        _ok(llmctl, "model", "update", "qwen2:0.5b", "--no-capabilities")
        _ok(llmctl, "reconcile", "--once")
        again = llmctl("resolve", "qwen2:0.5b", "--capability", "prompt", "-o", "json").json()
        assert {again["provider"]["backend"], *(p["backend"] for p in again["fallbacks"])} == {
            "gpu-0",
            "gpu-1",
        }
