"""``llmctl model upgrades`` and the ``UpdateAvailable`` condition, as a user meets them."""

from __future__ import annotations

import pytest

from emulators import ollama
from tests.e2e.conftest import Cli, Result

pytestmark = pytest.mark.timeout(60)
QWEN = "qwen2:0.5b"


def _ok(llmctl: Cli, *args: str) -> Result:
    result = llmctl(*args)
    assert result.code == 0, (args, result.out, result.err)
    return result


def test_model_upgrades_lists_each_backend_holding_a_tag_that_moved(
    llmctl: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ollama.in_thread(nodes=2, installed=[QWEN, "smollm2:135m"]) as emu:
        monkeypatch.setenv("LLMCTL_REGISTRY_URL", emu.node_url(0))
        monkeypatch.setenv("LLMCTL_UPGRADE_CHECK_INTERVAL_S", "3600")
        for i in range(2):
            _ok(llmctl, "backend", "add", f"gpu-{i}", "--type", "ollama", "--url", emu.node_url(i))
        _ok(llmctl, "model", "add", QWEN)
        _ok(llmctl, "model", "add", "smollm2:135m")
        _ok(llmctl, "reconcile", "--once")
        assert _ok(llmctl, "model", "upgrades", "-o", "json").json() == []
        old = next(m.spec.digest for m in emu.nodes[0].installed.values() if m.spec.name == QWEN)
        new = ollama.publish(emu, QWEN).digest
        monkeypatch.setenv("LLMCTL_UPGRADE_CHECK_INTERVAL_S", "0.001")  # due again at once
        _ok(llmctl, "reconcile", "--once")
        found = _ok(llmctl, "model", "upgrades", "-o", "json").json()
        assert [(u["model"], u["backend"], u["from"], u["to"]) for u in found] == [
            (QWEN, "gpu-0", old, new),
            (QWEN, "gpu-1", old, new),
        ]
        table = _ok(llmctl, "model", "upgrades").out.splitlines()
        assert table[0].split() == ["MODEL", "BACKEND", "FROM", "TO", "SINCE"]
        assert table[2].split()[:4] == [QWEN, "gpu-0", old[:12], new[:12]]
        shown = _ok(llmctl, "backend", "get", "gpu-1", "-o", "json").json()
        (condition,) = [c for c in shown["status"]["conditions"] if c["type"] == "UpdateAvailable"]
        assert condition["reason"] == "update_available"
        assert f"{QWEN}: {old[:12]} -> {new[:12]}" in condition["message"]
        asked = emu.nodes[0].requests
        assert asked["GET /v2/library/qwen2/manifests/0.5b"] == 2
        assert asked["GET /v2/library/smollm2/manifests/135m"] == 2
