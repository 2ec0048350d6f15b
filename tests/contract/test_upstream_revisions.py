"""What upstream has now, as the upgrade checks ask it: the emulated registry and hub."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from emulators import hfhub
from emulators import ollama as emulator
from runtimestate.backends import upstream
from tests.contract.conftest import HUB_REPOS


async def test_the_ollama_answer_is_the_digest_a_pull_of_the_tag_would_install() -> None:
    async with emulator.running(installed=["qwen2:0.5b"]) as emu:
        asker = upstream.Upstream(emu.url, None)
        try:
            before = await asker.latest("ollama", "qwen2:0.5b")
            moved = emulator.publish(emu, "qwen2:0.5b")
            after = await asker.latest("ollama", "library/qwen2:0.5b")
            async with httpx.AsyncClient(base_url=emu.url) as client:
                body = await client.get("/v2/library/qwen2/manifests/0.5b")
        finally:
            await asker.aclose()
    listed = emu.nodes[0].installed
    assert before == next(iter(listed.values())).spec.digest != after
    assert after == moved.digest == hashlib.sha256(body.content).hexdigest()


async def test_the_hub_answer_is_mains_commit_and_a_missing_repo_is_an_error() -> None:
    async with hfhub.running(repos=HUB_REPOS) as hub:
        asker = upstream.Upstream(None, hub.url)
        try:
            first = await asker.latest("hub", "org/tiny")
            sha = hub.nodes[0].repos["org/tiny"].publish({"extra.bin": 10})
            second = await asker.latest("hub", "org/tiny")
            with pytest.raises(upstream.UpstreamError, match="HTTP 401"):
                await asker.latest("hub", "org/nope")  # the hub's answer to an unknown repo
        finally:
            await asker.aclose()
    assert first != second == sha


async def test_a_private_repo_is_checked_with_the_hub_token_and_only_the_hub_gets_it() -> None:
    seen: list[tuple[str, str | None]] = []

    async def note(request: httpx.Request) -> None:
        seen.append((request.url.netloc.decode(), request.headers.get("authorization")))

    async with hfhub.running(repos=HUB_REPOS) as hub, emulator.running() as registry:
        anonymous = upstream.Upstream(registry.url, hub.url)
        granted = upstream.Upstream(registry.url, hub.url, hub_token="hf_ok")
        try:
            with pytest.raises(upstream.UpstreamError, match=r"HTTP 401.*hub_token_file"):
                await anonymous.latest("hub", "org/private")
            for client in ("ollama", "hub"):  # every request either asker sends, noted
                granted._client(client).event_hooks["request"].append(note)
            sha = await granted.latest("hub", "org/private")
            await granted.latest("ollama", "qwen2:0.5b")
        finally:
            await anonymous.aclose()
            await granted.aclose()
    assert sha == hub.nodes[0].repos["org/private"].branches["main"]
    assert seen == [(_host(hub.url), "Bearer hf_ok"), (_host(registry.url), None)]
    assert "hf_ok" not in repr(granted)


def _host(url: str) -> str:
    return httpx.URL(url).netloc.decode()
