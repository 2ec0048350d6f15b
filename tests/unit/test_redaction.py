"""`redaction.mask` (pure) and the adapters that apply it to the error text a provider echoes."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from runtimestate import credentials, errors
from runtimestate.backends import adapters, base, gemini, ollama, openai, redaction, vllm
from runtimestate.desired import spec

KEY = "sk-proj-Abc123Def456Ghi789Jkl012"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Incorrect API key provided: {KEY}.", "Incorrect API key provided: ****."),
        (f"Incorrect API key provided: {KEY[:12]}...", "Incorrect API key provided: ****..."),
        (f"key ending in {KEY[-10:]} is revoked", "key ending in **** is revoked"),
        (f"{KEY[:8]}…{KEY[-8:]}", "****…****"),
        (f"twice: {KEY} and {KEY}", "twice: **** and ****"),
        (f"query ?key={urllib.parse.quote(KEY + '/+=', safe='')}", "query ?key=****"),
        (f"{KEY[:7]} and {KEY[-7:]} are too short to say anything", None),
        ("Incorrect API key provided", None),
        ("", None),
    ],
)
def test_mask_hides_the_key_and_its_long_prefixes_and_suffixes(
    text: str, expected: str | None
) -> None:
    secret = KEY + "/+=" if "query" in text else KEY
    assert redaction.mask(text, secret) == (text if expected is None else expected)


def test_mask_hides_a_key_echoed_json_escaped_or_url_encoded() -> None:
    key = 'sk-"quoted"/slash+plus'
    escaped = json.dumps(key)[1:-1]
    for text in (
        f'body was {{"key": "{escaped}"}}',
        f"body was {escaped.replace('/', chr(92) + '/')}",
        f"url was https://h/?k={urllib.parse.quote(key, safe='')}",
        f"form was k={urllib.parse.quote_plus(key)}",
    ):
        masked = redaction.mask(text, key)
        assert "****" in masked, text
        for form in redaction.forms(key):
            assert form[:8] not in masked, (text, masked)
            assert form[-8:] not in masked, (text, masked)


def test_mask_changes_nothing_without_a_secret() -> None:
    text = f"Incorrect API key provided: {KEY}"
    assert redaction.mask(text, None) is text
    assert redaction.mask(text, "") is text


def test_a_short_key_is_masked_only_whole() -> None:
    assert redaction.mask("key abc rejected; abcdef", "abc") == "key **** rejected; ****def"


@hypothesis.given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    start=st.integers(0, len(KEY) - 8),
    length=st.integers(8, len(KEY)),
)
def test_no_prefix_or_suffix_of_eight_characters_survives(
    before: str, after: str, start: int, length: int
) -> None:
    prefix, suffix = KEY[:length], KEY[len(KEY) - length :]
    masked = redaction.mask(f"{before}{prefix}{after}{KEY}{before}{suffix}{after}", KEY)
    for n in range(8, len(KEY) + 1):
        assert KEY[:n] not in masked
        assert KEY[-n:] not in masked


# --- the adapters mask what the provider echoes ------------------------------------------------

FAST = base.Timeouts(connect=0.3, read=0.3, stall=0.3, total=0.3)
ECHO = f"Incorrect API key provided: {KEY}; starts {KEY[:10]}, ends {KEY[-9:]}"


def _echo(status: int, body: Callable[[str], object]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda _: httpx.Response(status, json=body(ECHO)))


def _openai_body(text: str) -> object:
    return {"error": {"message": text, "type": "invalid_request_error"}}


ADAPTERS: dict[str, Callable[[httpx.MockTransport], base.Observer]] = {
    "openai": lambda t: openai.OpenAIBackend(
        "http://cloud.test/v1", name="cloud", api_key=KEY, timeouts=FAST, transport_=t
    ),
    "vllm": lambda t: vllm.VllmBackend(
        "http://vllm.test", name="cloud", api_key=KEY, timeouts=FAST, transport_=t
    ),
    "gemini": lambda t: gemini.GeminiBackend(
        "http://gemini.test", name="cloud", api_key=KEY, timeouts=FAST, transport_=t
    ),
    "ollama": lambda t: ollama.OllamaBackend(
        "http://ollama.test", name="cloud", api_key=KEY, timeouts=FAST, transport_=t
    ),
}


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("status", [401, 400, 500])
async def test_every_adapter_masks_the_key_a_provider_echoes_in_its_error(
    kind: str, status: int
) -> None:
    body = (lambda text: {"error": text}) if kind == "ollama" else _openai_body
    adapter = ADAPTERS[kind](_echo(status, body))
    try:
        with pytest.raises(errors.LlmctlError) as caught:
            await adapter.observe()
    finally:
        await adapter.aclose()
    error = caught.value
    assert "Incorrect API key provided: ****; starts ****, ends ****" in error.detail
    chain: BaseException | None = error
    while chain is not None:  # nothing a traceback would print holds the key either
        for n in (8, len(KEY)):
            assert KEY[:n] not in str(chain), repr(chain)
            assert KEY[-n:] not in str(chain), repr(chain)
        chain = chain.__cause__ or (None if chain.__suppress_context__ else chain.__context__)
    assert error.status_code == status


async def test_the_adapter_pool_masks_the_key_of_the_backend_it_built_and_only_that() -> None:
    creds = credentials.Credentials(credentials.CredentialKind.ENV, env_var="CLOUD_KEY")
    cloud = spec.make_backend("cloud", "openai", "http://cloud.test/v1", credentials=creds)
    pool = adapters.AdapterPool(FAST, {"CLOUD_KEY": KEY})
    try:
        assert pool.redact("cloud", ECHO) == ECHO  # not built yet: no key known
        pool.get(cloud)
        assert pool.redact("cloud", ECHO) == (
            "Incorrect API key provided: ****; starts ****, ends ****"
        )
        assert pool.redact("other", ECHO) == ECHO
        await pool.retain(())
        assert pool.redact("cloud", ECHO) == ECHO  # forgotten with its adapter
    finally:
        await pool.aclose()


async def test_ollama_pull_status_lines_are_masked_before_they_are_stored_or_published() -> None:
    lines = [{"status": f"pulling through proxy as {KEY}"}, {"status": "success"}]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    transport = httpx.MockTransport(
        lambda _: httpx.Response(
            200, headers={"content-type": "application/x-ndjson"}, content=body
        )
    )
    async with ollama.OllamaBackend(
        "http://ollama.test", name="gpu", api_key=KEY, timeouts=FAST, transport_=transport
    ) as adapter:
        seen = [progress.status async for progress in adapter.pull("llama3")]
    assert seen == ["pulling through proxy as ****", "success"]
