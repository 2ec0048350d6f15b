"""API keys as a user stores them, and a provider that echoes them back: never shown anywhere."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
from aiohttp import web

from controller import httpapi, metrics
from dwqueue import flushing
from runtimestate import database, state
from tests.e2e.conftest import Cli, dump

KEY = "sk-proj-" + secrets.token_urlsafe(36)
SENT = web.AppKey("sent", list[str])


async def _models(request: web.Request) -> web.Response:
    """An OpenAI-style 401 that echoes the key it was sent: whole, a prefix and a suffix."""
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
    request.app[SENT].append(sent)
    message = (
        f"Incorrect API key provided: {sent}. Its first characters are {sent[:11]}, "
        f"its last {sent[-9:]}. You can find your API key at https://platform.openai.com."
    )
    error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
    return web.json_response({"error": error}, status=401)


@pytest.fixture
async def provider() -> AsyncIterator[tuple[str, list[str]]]:
    """A stub OpenAI-compatible provider on 127.0.0.1: its base URL and the keys it received."""
    app = web.Application()
    app[SENT] = []
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", app[SENT]
    finally:
        await runner.cleanup()


def _leaks(text: str) -> list[str]:
    """The pieces of KEY found in ``text``: the whole key, or 8+ characters of either end."""
    return [piece for piece in (KEY, KEY[:8], KEY[-8:]) if piece in text]


async def _v1_state(database_url: str, environ: dict[str, str]) -> str:
    """``/v1/state`` of a controller that ran one backend cycle on the same database."""
    engine = database.create_async_engine(database_url)
    runtime = state.State(engine, environ=environ)
    server = None
    try:
        await runtime.run_backend_cycle()

        async def ready() -> dict[str, str | None]:
            return {}

        sources = httpapi.Sources(metrics=metrics.Metrics(), ready=ready, snapshot=runtime.get)
        server = httpapi.Server(sources, "127.0.0.1", 0)
        await server.start()
        address = f"http://127.0.0.1:{server.port}/v1/state"
        async with aiohttp.ClientSession() as session, session.get(address) as response:
            assert response.status == 200
            return await response.text()
    finally:
        if server is not None:
            await server.stop()
        await runtime.aclose()
        await engine.dispose()


@pytest.mark.parametrize("kind", ["env", "stdin"])
async def test_a_key_the_provider_echoes_in_its_error_is_masked_in_every_output(
    llmctl: Cli,
    database_url: str,
    nats_url: str,
    nats_prefix: str,
    provider: tuple[str, list[str]],
    kind: str,
) -> None:
    url, sent = provider
    if kind == "env":
        env = {"CLOUD_KEY": KEY}
        how, stdin = ["--api-key-env", "CLOUD_KEY"], None
    else:
        env = {"LLMCTL_SECRET_KEY": secrets.token_urlsafe(32)}
        how, stdin = ["--api-key-stdin"], KEY + "\n"
    added = await asyncio.to_thread(
        llmctl, "backend", "add", "cloud", "--url", url, "--type", "openai", *how,
        input=stdin, env=env,
    )  # fmt: skip
    assert added.code == 0, added.err
    nats_args = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(f"{nats_prefix}.v1.state.cloud")
        await flushing.flush(nc, 10)  # the server has the SUB
        table = await asyncio.to_thread(llmctl, *nats_args, "reconcile", "--once", env=env)
        published = (await sub.next_msg(timeout=10)).data.decode()
    finally:
        await nc.close()
    assert sent == [KEY]  # the provider did get the key, and echoed it

    def run(*args: str) -> str:
        result = llmctl(*args, env=env)
        return result.out + result.err

    outputs = {
        "reconcile": table.out + table.err,
        "reconcile -o json": await asyncio.to_thread(run, "reconcile", "--once", "-o", "json"),
        "backend list": await asyncio.to_thread(run, "backend", "list"),
        "backend list -o json": await asyncio.to_thread(run, "backend", "list", "-o", "json"),
        "backend get": await asyncio.to_thread(run, "backend", "get", "cloud"),
        "backend get -o json": await asyncio.to_thread(
            run, "backend", "get", "cloud", "-o", "json"
        ),
        "database": str(await asyncio.to_thread(dump, database_url)),
        "NATS state message": published,
        "/v1/state": await _v1_state(database_url, env),
    }
    for where, text in outputs.items():
        assert not _leaks(text), f"{where} shows the key: {text}"
        assert "Incorrect API key provided: ****" in text, f"{where} lost the error: {text}"
    status = json.loads(outputs["backend get -o json"])["status"]
    assert status["phase"] == "Unreachable"
    assert "Its first characters are ****, its last ****." in status["error"]
    assert "unauthorized" in json.dumps(status["conditions"])
