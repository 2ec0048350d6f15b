"""``llmctl gateway``'s reply cache as a user meets it: a real gateway process over Postgres and
an emulated vLLM node, the official openai client, and the ``--cache-*`` options refused in
one line when wrong."""

from __future__ import annotations

import pathlib

import openai
import pytest

import migrations
from emulators import vllm
from tests.e2e.test_cli_gateway import MESSAGES, _gateway, _run, _seed
from tests.integration.gateway_harness import GENERATIVE
from tests.unit.test_resolver import backend, model


async def test_the_gateway_answers_a_repeated_temperature_0_chat_from_its_cache(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    async with vllm.running(served_model_names=["qwen"]) as emu:
        node = emu.node_url(0)
        state = backend("vllm-a", model("qwen", 8192, caps=GENERATIVE), type_="vllm",
                        base_url=node)  # fmt: skip
        await _seed(postgres_url, {"vllm-a": node}, [state])
        async with _gateway(
            "--database-url", postgres_url, options=("--allow-unauthenticated",)
        ) as (_, url):
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            chat = client.chat.completions.with_raw_response
            replies = [
                await chat.create(model="qwen", messages=MESSAGES, temperature=t)
                for t in (0, 0, 0.7, 0.7)
            ]
            await client.close()
    assert [r.headers.get("x-llmctl-cache") for r in replies] == ["miss", "hit", None, None]
    assert replies[1].content == replies[0].content
    assert replies[3].content != replies[2].content
    assert emu.nodes[0].counters["success_stop"] == 3


@pytest.mark.parametrize(
    ("options", "variables", "says"),
    [
        (["--cache-ttl", "soon"], {}, "--cache-ttl 'soon' (LLMCTL_GATEWAY_CACHE_TTL_S): give"),
        ([], {"LLMCTL_GATEWAY_CACHE_TTL_S": "-5"}, "or 0 to turn the cache off"),
        (["--cache-max-bytes", "lots"], {}, "such as 65536 or 64MiB"),
        ([], {"LLMCTL_GATEWAY_CACHE_MAX_ENTRY_BYTES": "0"}, "--cache-max-entry-bytes '0'"),
        (
            ["--cache-max-bytes", "1MiB", "--cache-max-entry-bytes", "2MiB"],
            {},
            "an entry must fit in the cache",
        ),
    ],
)
def test_a_bad_cache_option_exits_2_in_one_line_before_anything_is_written(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    variables: dict[str, str],
    says: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    database = tmp_path / "llmctl.db"
    code, err = _run("--database-url", f"sqlite:///{database}", "gateway", *options)
    assert code == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1
    assert not database.exists()
