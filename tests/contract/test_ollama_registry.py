"""The emulator's registry manifests (PROTOCOLS C.2) and the controller's sizes from them."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import ollama

from emulators import catalog, names
from emulators import ollama as emulator
from runtimestate import clock
from runtimestate.backends import registry

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


async def test_the_emulator_serves_each_catalog_models_manifest_as_the_registry_does() -> None:
    spec = catalog.Catalog().get(names.parse("qwen2:0.5b"))
    assert spec is not None
    async with emulator.running() as emu, httpx.AsyncClient(base_url=emu.url) as client:
        reply = await client.get("/v2/library/qwen2/manifests/0.5b", headers={"accept": MANIFEST})
        missing = await client.get("/v2/library/nope/manifests/latest")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(MANIFEST)
    body = reply.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == MANIFEST
    assert body["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert body["layers"][0]["mediaType"] == "application/vnd.ollama.image.model"
    assert all(layer["digest"].startswith("sha256:") for layer in body["layers"])
    total = sum(layer["size"] for layer in body["layers"]) + body["config"]["size"]
    assert total == spec.size  # what /api/tags reports once pulled
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_sizes_come_from_the_registry_manifest_and_unknown_models_are_left_out() -> None:
    spec = catalog.Catalog().get(names.parse("qwen2:0.5b"))
    assert spec is not None
    async with emulator.running() as emu:
        sizes = registry.Sizes(emu.url)
        try:
            found = await sizes.lookup(["qwen2:0.5b", "library/qwen2:0.5b", "nope:1b"])
        finally:
            await sizes.aclose()
    assert found == {"qwen2:0.5b": spec.size, "library/qwen2:0.5b": spec.size}


async def test_the_registry_is_asked_once_per_model_per_ttl_not_per_lookup() -> None:
    fake = clock.FakeClock()
    async with emulator.running() as emu:
        sizes = registry.Sizes(emu.url, ttl_s=60.0, clock=fake)
        try:
            for _ in range(5):
                await sizes.lookup(["qwen2:0.5b"])
            assert emu.nodes[0].requests["GET /v2/library/qwen2/manifests/0.5b"] == 1
            fake.advance(61.0)
            assert await sizes.lookup(["qwen2:0.5b"])
        finally:
            await sizes.aclose()
        assert emu.nodes[0].requests["GET /v2/library/qwen2/manifests/0.5b"] == 2


async def test_an_unreachable_registry_leaves_the_size_unknown_and_is_not_asked_again_at_once() -> (
    None
):
    sizes = registry.Sizes("http://127.0.0.1:9", failure_ttl_s=30.0)
    try:
        assert await sizes.lookup(["qwen2:0.5b"]) == {}
        assert await sizes.lookup(["qwen2:0.5b"]) == {}
    finally:
        await sizes.aclose()
    assert sizes.fetches == 1


def test_manifest_paths_follow_ollamas_name_defaults() -> None:
    assert registry.manifest_path("qwen2:0.5b") == (None, "/v2/library/qwen2/manifests/0.5b")
    assert registry.manifest_path("myns/foo") == (None, "/v2/myns/foo/manifests/latest")
    assert registry.manifest_path("example.com:5000/ns/foo:v1") == (
        "example.com:5000",
        "/v2/ns/foo/manifests/v1",
    )


async def test_a_registry_that_never_answers_holds_a_lookup_up_only_until_its_deadline() -> None:
    accepted = asyncio.Event()
    never = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await never.wait()  # reads nothing, answers nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sizes = registry.Sizes(f"http://127.0.0.1:{port}", deadline_s=0.3)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        assert await sizes.lookup(["qwen2:0.5b"]) == {}
        assert loop.time() - started < 2.0
        assert accepted.is_set()
        assert await sizes.lookup(["qwen2:0.5b"]) == {}  # the failure is kept: not asked again
        assert sizes.fetches == 1
    finally:
        never.set()
        server.close()
        await server.wait_closed()
        await sizes.aclose()


async def test_a_published_revision_moves_the_manifest_and_its_digest() -> None:
    async with emulator.running() as emu, httpx.AsyncClient(base_url=emu.url) as client:
        before = await client.get("/v2/library/qwen2/manifests/0.5b")
        admin = await client.post("/_emulator/state", json={"publish": {"model": "qwen2:0.5b"}})
        after = await client.get("/v2/library/qwen2/manifests/0.5b")
        other = await client.get("/v2/library/llama3/manifests/latest")
    assert admin.status_code == 200
    assert admin.json()["nodes"][0]["published"] == {"qwen2:0.5b": "2"}
    old, new = (hashlib.sha256(r.content).hexdigest() for r in (before, after))
    assert old != new
    assert after.headers["Docker-Content-Digest"] == f"sha256:{new}"
    assert before.json()["layers"][0]["digest"] != after.json()["layers"][0]["digest"]
    assert (
        other.headers["Docker-Content-Digest"]
        == "sha256:" + hashlib.sha256(other.content).hexdigest()
    )


async def test_publishing_on_every_node_of_a_host_moves_the_shared_tag_once() -> None:
    async with emulator.running(nodes=3) as emu, httpx.AsyncClient(base_url=emu.url) as client:
        reply = await client.post("/_emulator/state", json={"publish": {"model": "qwen2:0.5b"}})
    assert [n["published"] for n in reply.json()["nodes"]] == [{"qwen2:0.5b": "2"}] * 3


async def test_a_repull_after_a_publish_keeps_the_old_copy_until_the_new_manifest_is_written() -> (
    None
):
    async with (
        emulator.running(
            installed=["qwen2:0.5b"], pull_rate=1_000_000_000, tick_interval=0.01
        ) as emu,
        ollama.AsyncClient(host=emu.url) as client,
    ):
        old = (await client.list()).models[0].digest
        new = emulator.publish(emu, "qwen2:0.5b")
        listed_during: list[str | None] = []
        statuses: list[str] = []
        async for progress in await client.pull("qwen2:0.5b", stream=True):
            statuses.append(progress.status or "")
            if progress.status and progress.status.startswith("pulling "):
                listed_during.append((await client.list()).models[0].digest)
        after = (await client.list()).models
    assert old != new.digest
    assert listed_during[0] == old  # the server runs ahead of the client: only the first
    assert statuses[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert [(m.model, m.digest) for m in after] == [("qwen2:0.5b", new.digest)]
    disk = emu.nodes[0].disk.complete
    assert set(disk) == {blob.digest for blob in new.blobs}
