"""``llmctl gateway --profiles FILE``: what the resolver learned survives a restart."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal

import openai
import pytest

import migrations
from emulators import faults, vllm
from tests.e2e.test_cli_gateway import MESSAGES, _gateway, _run, _seed
from tests.integration.gateway_harness import GENERATIVE
from tests.unit.test_resolver import backend, model


async def test_learned_figures_are_saved_at_stop_and_restored_at_start(
    postgres_url: str, tmp_path: pathlib.Path
) -> None:
    migrations.upgrade(postgres_url)
    saved = tmp_path / "profiles.json"
    async with vllm.running(served_model_names=["qwen"], nodes=2) as emu:
        states = [
            backend(
                f"vllm-{i}",
                model("qwen", 8192, caps=GENERATIVE),
                type_="vllm",
                base_url=emu.node_url(i),
            )
            for i in range(2)
        ]
        await _seed(postgres_url, {s.name: s.base_url for s in states}, states)
        emu.set_fault(faults.Fault(faults.FaultKind.HTTP_500), node=1)
        options = ("--allow-unauthenticated", "--profiles", str(saved))
        async with _gateway("--database-url", postgres_url, options=options) as (child, url):
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            for _ in range(6):
                await client.chat.completions.create(model="qwen", messages=MESSAGES)
            await client.close()
            child.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(child.wait(), 10) == 0
        document = json.loads(saved.read_text())
        assert document["kind"] == "ResolverProfiles"
        figures = {(p["backend"], p["model"]): p for p in document["providers"]}
        assert figures[("vllm-0", "qwen")]["errorRate"] == 0
        assert figures[("vllm-1", "qwen")]["errorRate"] > 0
        assert figures[("vllm-0", "qwen")]["latencyS"] > 0

        async with _gateway("--database-url", postgres_url, options=options) as (child, url):
            child.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(child.wait(), 10) == 0
            assert child.stderr is not None
            rest = (await child.stderr.read()).decode()
        again = json.loads(saved.read_text())
        # Restored, not learned anew: the second gateway served nothing before it stopped.
        assert {(p["backend"], p["model"]) for p in again["providers"]} == set(figures)
        assert again["providers"] != []
        assert "Traceback" not in rest


async def test_a_corrupt_profiles_file_is_reported_and_the_gateway_starts_cold(
    postgres_url: str, tmp_path: pathlib.Path
) -> None:
    migrations.upgrade(postgres_url)
    saved = tmp_path / "profiles.json"
    saved.write_text('{"kind": "Something", "version": 9}')
    options = ("--allow-unauthenticated", "--profiles", str(saved))
    async with _gateway("--database-url", postgres_url, options=options) as (child, _):
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 10) == 0
    assert json.loads(saved.read_text())["kind"] == "ResolverProfiles"  # replaced at stop


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing/profiles.json", "does not exist; create it first"),
        (".", "is a directory"),
    ],
)
def test_a_profiles_path_that_cannot_be_saved_exits_2_before_serving(
    tmp_path: pathlib.Path, where: str, says: str
) -> None:
    database = tmp_path / "x.db"
    code, err = _run(
        "--database-url", f"sqlite:///{database}", "gateway", "--allow-unauthenticated",
        "--profiles", str(tmp_path / where),
    )  # fmt: skip
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert not database.exists()
