"""``llmctl model upgrades`` and the ``UpdateAvailable`` condition, as a user meets them."""

from __future__ import annotations

import pytest

from emulators import ollama
from tests.e2e.conftest import Cli, Result, dump

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
        assert table[0].split() == ["MODEL", "BACKEND", "FROM", "TO", "SINCE", "POLICY"]
        assert table[2].split()[:4] == [QWEN, "gpu-0", old[:12], new[:12]]
        assert table[2].split()[-1] == "manual"
        shown = _ok(llmctl, "backend", "get", "gpu-1", "-o", "json").json()
        (condition,) = [c for c in shown["status"]["conditions"] if c["type"] == "UpdateAvailable"]
        assert condition["reason"] == "update_available"
        assert f"{QWEN}: {old[:12]} -> {new[:12]}" in condition["message"]
        asked = emu.nodes[0].requests
        assert asked["GET /v2/library/qwen2/manifests/0.5b"] == 2
        assert asked["GET /v2/library/smollm2/manifests/135m"] == 2


def test_model_upgrade_rolls_a_manual_model_one_backend_at_a_time(
    llmctl: Cli, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ollama.in_thread(nodes=2, installed=[QWEN]) as emu:
        monkeypatch.setenv("LLMCTL_REGISTRY_URL", emu.node_url(0))
        monkeypatch.setenv("LLMCTL_UPGRADE_CHECK_INTERVAL_S", "3600")
        for i in range(2):
            _ok(llmctl, "backend", "add", f"gpu-{i}", "--type", "ollama", "--url", emu.node_url(i))
        _ok(llmctl, "model", "add", QWEN)
        new = ollama.publish(emu, QWEN).digest
        _ok(llmctl, "reconcile", "--once")
        assert "upgrade" not in _ok(llmctl, "reconcile", "--once", "--dry-run").out  # manual
        assert [node.pulls[QWEN] for node in emu.nodes] == [0, 0]
        (listed,) = {u["policy"] for u in _ok(llmctl, "model", "upgrades", "-o", "json").json()}
        assert listed == "manual"
        asked = _ok(llmctl, "model", "upgrade", "qwen2:0.5B")
        assert asked.out.strip() == "model/qwen2:0.5B upgrade requested on gpu-0, gpu-1"
        dry = _ok(llmctl, "reconcile", "--once", "--dry-run").out
        assert f"pull {QWEN} on gpu-0: upgrade " in dry, dry
        assert "(asked for by llmctl model upgrade)" in dry
        assert f"drift on gpu-1: {QWEN} upgrade held (1 of maxUnavailable 1 copies out" in dry
        for _ in range(3):
            _ok(llmctl, "reconcile", "--once", "--wait", "--timeout", "30")
        digests = {m.spec.digest for node in emu.nodes for m in node.installed.values()}
        assert digests == {new}
        assert [node.pulls[QWEN] for node in emu.nodes] == [1, 1]
        assert _ok(llmctl, "model", "upgrades", "-o", "json").json() == []
        assert dump(database_url)["upgrade_requests"] == []  # done: the request is gone
        nothing = _ok(llmctl, "model", "upgrade", QWEN)
        assert nothing.out.strip() == f"model/{QWEN}: no upgrade available"


def test_update_policy_and_max_unavailable_are_declared_shown_and_exported(llmctl: Cli) -> None:
    _ok(llmctl, "model", "add", QWEN, "--update-policy", "auto", "--max-unavailable", "2")
    shown = _ok(llmctl, "model", "get", QWEN, "-o", "json").json()
    assert (shown["updatePolicy"], shown["maxUnavailable"]) == ("auto", 2)
    _ok(llmctl, "model", "update", QWEN, "--update-policy", "manual")
    exported = _ok(llmctl, "export", "--kind", "Model").out
    assert "updatePolicy: manual" in exported
    assert "maxUnavailable: 2" in exported
    refused = llmctl("model", "add", "tinyllama", "--update-policy", "sometimes")
    assert refused.code == 2
    assert "updatePolicy must be manual or auto, not 'sometimes'" in refused.err
    missing = llmctl("model", "upgrade", "nope")
    assert missing.code == 2
    assert "nope" in missing.err
