"""A bug in an adapter's parsing is ours, not the node's: the backend cycle logs it with its
traceback and shows reason ``internal``, never ``protocol`` (which says the reply was at
fault). Emulated Ollama nodes and a real database; the bug is injected into the parser."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from emulators import ollama
from runtimestate import snapshot
from runtimestate.backends import ollamareplies
from tests.integration.cycle_fixtures import Fleet, fleet_file

pytestmark = pytest.mark.timeout(60)


def _bug(error: Exception) -> Any:
    def parse(*_: object, **__: object) -> Any:
        raise error

    return parse


@pytest.mark.parametrize(
    ("helper", "error"),
    [
        ("loaded", KeyError("digest")),  # parsing /api/ps
        ("facts_from_show", TypeError("unhashable type: 'list'")),  # parsing /api/show
        ("observed", AttributeError("'NoneType' object has no attribute 'family'")),
    ],
)
async def test_a_parsing_bug_in_an_adapter_is_logged_with_its_traceback_and_not_reported_as_protocol(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, helper: str, error: Exception
) -> None:
    async with ollama.running(installed=["qwen2:0.5b"]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"]))
        monkeypatch.setattr(ollamareplies, helper, _bug(error))
        with structlog.testing.capture_logs(
            processors=[structlog.processors.format_exc_info]
        ) as logged:
            report = await fleet.state.run_backend_cycle()
    state = report.snapshot.backends["gpu-0"]
    reachable = state.condition("Reachable")
    assert reachable is not None
    assert (reachable.status, reachable.reason) == (False, "internal")
    assert state.phase is not snapshot.Phase.READY
    failed = [e for e in logged if e["event"] == "observation failed unexpectedly"]
    assert len(failed) == 1, logged
    assert failed[0]["backend"] == "gpu-0"
    traceback = failed[0]["exception"]
    assert traceback.startswith("Traceback") or "Traceback" in traceback.splitlines()[0]
    assert f"{type(error).__name__}: " in traceback
    assert "in parse" in traceback  # the frame that raised: the bug is visible, not mapped
    assert not [e for e in logged if "protocol" in str(e.get("reason", ""))]
