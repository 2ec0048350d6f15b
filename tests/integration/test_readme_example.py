"""The README's resolver example runs as written against a real controller state."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from emulators import ollama
from runtimestate.desired import spec, store
from tests.integration.cycle_fixtures import Fleet

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Choosing a provider: the resolver") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the resolver section has no python example"
    return match.group(1)


@pytest.mark.timeout(120)
async def test_the_readme_resolver_example_chats_with_the_chosen_ollama_node(
    migrated_url: str, nats_url: str, tmp_path: pathlib.Path
) -> None:
    code = _example()
    assert (
        'Resolver.from_database(\n        "postgresql://llmctl@db/llmctl", nats_url="nats://nats:4222"'
        in code
    )
    code = code.replace("postgresql://llmctl@db/llmctl", migrated_url)
    code = code.replace("nats://nats:4222", nats_url)
    async with ollama.running(installed=["qwen2:0.5b"]) as emu:
        fleet = Fleet(migrated_url)
        try:
            backend = spec.make_backend("gpu-1", "ollama", emu.url)
            await fleet.tx(lambda s: store.add_backend(s, backend, pools=()))
            report = await fleet.state.run_backend_cycle()
            assert report.snapshot.backends["gpu-1"].phase.value == "Ready"
        finally:
            await fleet.close()
        script = tmp_path / "example.py"
        script.write_text(code)
        root = str(README.parent)
        env = {**os.environ, "PYTHONPATH": root}
        done = await _run([sys.executable, str(script)], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu-1: ")
    assert emu.nodes[0].requests["POST /api/chat"] == 1


async def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=90, check=False
    )
