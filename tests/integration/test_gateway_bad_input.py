"""Bad input to the gateway gets OpenAI's 4xx envelope; a provider's key never comes back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from aiohttp import web

from gateway import access, application, envelopes
from runtimestate import credentials, desired, resolver
from runtimestate.desired import spec
from tests.integration import gateway_harness
from tests.integration.gateway_harness import GENERATIVE, META
from tests.unit.test_resolver import backend, fleet, model

CHAT = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}


async def _post(url: str, content: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{url}/chat/completions",
            content=content,
            headers={"Content-Type": "application/json"},
        )


def _error(response: httpx.Response) -> dict[str, object]:
    error = response.json()["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (b'{"model": "qwen", "messages": [', None, "not valid JSON"),
        (b'["qwen"]', None, "must be a JSON object"),
        (b'{"messages": []}', "model", "you must provide a model parameter"),
        (b'{"model": "", "messages": []}', "model", "you must provide a model parameter"),
        (b'{"model": "qwen", "messages": [], "stream": "yes"}', "stream", "true or false"),
    ],
)
async def test_a_malformed_request_gets_400_naming_the_problem(
    body: bytes, param: str | None, says: str
) -> None:
    async with gateway_harness.running(nodes=1) as h:
        response = await _post(h.url, body)
        assert response.status_code == 400
        error = _error(response)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert says in str(error["message"])
        assert h.emulator.nodes[0].counters["success_stop"] == 0  # nothing was forwarded


async def test_an_unknown_model_gets_404_model_not_found() -> None:
    async with gateway_harness.running(nodes=1) as h:
        with pytest.raises(openai.NotFoundError) as caught:
            await h.client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.code == "model_not_found"
        assert "no-such-model" in caught.value.message


async def test_a_body_over_the_cap_gets_413_and_is_not_forwarded() -> None:
    small = application.Settings(max_body_bytes=2000)
    async with gateway_harness.running(nodes=1, settings=small) as h:
        with pytest.raises(openai.APIStatusError) as caught:
            await h.client.chat.completions.create(
                model="qwen", messages=[{"role": "user", "content": "x" * 5000}]
            )
        assert caught.value.status_code == 413
        assert "gateway_max_body_bytes" in caught.value.message
        assert h.emulator.nodes[0].counters["success_stop"] == 0


async def test_an_unknown_route_gets_a_404_envelope_listing_the_routes() -> None:
    async with gateway_harness.running(nodes=1) as h, httpx.AsyncClient() as client:
        response = await client.post(f"{h.url}/images/generations", json=CHAT)
        assert response.status_code == 404
        assert "/v1/chat/completions" in str(_error(response)["message"])


@contextlib.asynccontextmanager
async def _echoing_cloud(seen: list[str]) -> AsyncIterator[str]:
    """A cloud that refuses every request, echoing the key it was sent (as real ones do)."""

    async def refuse(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        seen.append(sent)
        error = {"message": f"Incorrect API key provided: {sent}", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    async with gateway_harness.listening(app) as url:
        yield url


async def test_a_provider_error_passes_through_without_the_providers_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "sk-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    seen: list[str] = []
    async with _echoing_cloud(seen) as cloud_url:
        states = [
            backend(
                "cloud", model("qwen", 8192, caps=GENERATIVE), type_="openai", base_url=cloud_url
            )
        ]
        creds = credentials.Credentials(credentials.CredentialKind.ENV, env_var="CLOUD_KEY")
        declared = spec.BackendSpec("cloud", spec.BackendType.OPENAI, cloud_url, credentials=creds)
        wanted = desired.DesiredState(backends=(spec.Backend(declared, META),), models=(), pools=())
        r = resolver.Resolver.from_snapshot(
            fleet(*states), desired=wanted, environ={"CLOUD_KEY": key}
        )
        async with gateway_harness.serving(r) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="client-token", max_retries=0)
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model="qwen", messages=[{"role": "user", "content": "hi"}]
                )
            await client.close()
    assert seen == [f"Bearer {key}"]  # the provider got its key, not the client's token
    assert "****" in caught.value.message
    shown = caught.value.message + str(caught.value.body) + capsys.readouterr().out
    assert key[:12] not in shown  # no long piece of the key either
    assert key[-12:] not in shown


async def test_a_model_that_cannot_do_the_route_gets_400_model_not_supported() -> None:
    async with gateway_harness.running(nodes=1) as h:
        with pytest.raises(openai.BadRequestError) as caught:
            await h.client.embeddings.create(model="qwen", input="hi")
        assert caught.value.code == "model_not_supported"
        assert "does not serve embeddings" in caught.value.message


async def test_a_model_whose_providers_all_cool_down_gets_503_with_retry_after() -> None:
    async with gateway_harness.running(nodes=1) as h:
        (provider,) = h.resolver.resolve(
            resolver.Request(models=("qwen",), capability="chat")
        ).providers()
        for _ in range(3):
            h.resolver.record_outcome(provider, False, 0.01)
        with pytest.raises(openai.InternalServerError) as caught:
            await h.client.chat.completions.create(
                model="qwen", messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == 503
        assert int(caught.value.response.headers["retry-after"]) >= 29
        assert "cooling down" in caught.value.message


class _OneKey(access.Open):
    """A key hook admitting one token, as a key store plugs in (`access.Keys`)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, str]] = []

    async def admit(self, token: str | None, model: str) -> access.Grant:
        self.asked.append((token, model))
        if token != "good-key":
            raise envelopes.Refusal(401, "invalid API key", code="invalid_api_key")
        return access.OPEN


async def test_a_key_hook_refusal_is_answered_before_anything_is_forwarded() -> None:
    async with gateway_harness.running(nodes=1) as h:
        keys = _OneKey()
        async with gateway_harness.serving(h.resolver, keys=keys) as url:
            bad = openai.AsyncOpenAI(base_url=url, api_key="bad-key", max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                await bad.chat.completions.create(
                    model="qwen", messages=[{"role": "user", "content": "hi"}]
                )
            assert caught.value.code == "invalid_api_key"
            assert h.emulator.nodes[0].counters["success_stop"] == 0
            good = openai.AsyncOpenAI(base_url=url, api_key="good-key", max_retries=0)
            await good.chat.completions.create(
                model="qwen", messages=[{"role": "user", "content": "hi"}]
            )
            await bad.close()
            await good.close()
        assert keys.asked == [("bad-key", "qwen"), ("good-key", "qwen")]
        assert h.emulator.nodes[0].counters["success_stop"] == 1
