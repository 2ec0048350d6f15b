"""``llmctl gateway`` as a user runs it: a real process over Postgres and NATS, the official
openai client through it to emulated vLLM nodes, a backend learned from NATS, a clean stop
(served without keys here: `test_cli_gateway_keys` has the keys)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator

import nats
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from typer.testing import CliRunner

import migrations
from controller import cli
from emulators import vllm
from runtimestate import database, snapshot
from runtimestate.desired import spec, store
from runtimestate.reconcile import status
from tests.integration.gateway_harness import GENERATIVE
from tests.integration.test_resolver_feed import T0
from tests.unit.test_resolver import backend, model

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


async def _seed(url: str, declared: dict[str, str], states: list[snapshot.LLMState]) -> None:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await store.add_backends(
                session, [spec.make_backend(n, "vllm", u) for n, u in declared.items()]
            )
            await status.write_states(session, {s.name: s for s in states}, {}, T0)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _gateway(
    *args: str, options: tuple[str, ...] = ()
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    child = await asyncio.create_subprocess_exec(
        LLMCTL, *args, "gateway", "--listen", "127.0.0.1:0", *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stderr is not None
    try:
        found = None
        for _ in range(5):  # lines before it say what was restored (--profiles)
            line = (await asyncio.wait_for(child.stderr.readline(), 30)).decode()
            found = re.search(r"serving (http://\S+/v1)", line)
            if found or not line.startswith("llmctl gateway:"):
                break
        assert found, line
        yield child, found.group(1)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def _models(client: openai.AsyncOpenAI) -> list[str]:
    return [m.id async for m in client.models.list()]


async def test_the_gateway_process_serves_the_fleet_and_follows_it_on_nats(
    postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    migrations.upgrade(postgres_url)
    async with (
        vllm.running(served_model_names=["qwen"]) as first,
        vllm.running(served_model_names=["llama"]) as second,
    ):
        qwen = backend("vllm-a", model("qwen", 8192, caps=GENERATIVE), type_="vllm",
                       base_url=first.node_url(0))  # fmt: skip
        llama = backend("vllm-b", model("llama", 8192, caps=GENERATIVE), type_="vllm",
                        base_url=second.node_url(0))  # fmt: skip
        urls = {"vllm-a": first.node_url(0), "vllm-b": second.node_url(0)}
        await _seed(postgres_url, urls, [qwen])
        options = ("--database-url", postgres_url, "--nats-url", nats_url,
                   "--subject-prefix", nats_prefix)  # fmt: skip
        async with _gateway(*options, options=("--allow-unauthenticated",)) as (child, url):
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            reply = await client.chat.completions.create(model="qwen", messages=MESSAGES)
            assert reply.choices[0].message.content
            assert await _models(client) == ["qwen"]

            nc = await nats.connect(nats_url)
            await nc.publish(f"{nats_prefix}.v1.state.vllm-b", snapshot.to_wire(llama))
            await nc.flush()
            await nc.close()
            deadline = time.monotonic() + 5
            while "llama" not in await _models(client):
                assert time.monotonic() < deadline, "the gateway never learned of vllm-b"
                await asyncio.sleep(0.02)
            stream = await client.chat.completions.create(
                model="llama", messages=MESSAGES, stream=True
            )
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert second.nodes[0].counters["success_stop"] == 1
            await client.close()

            child.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(child.wait(), 10) == 0


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("8080", "give host:port, such as 127.0.0.1:8080"),
        ("127.0.0.1:99999", "give host:port"),
        ("0.0.0.0:8080", "not a loopback address and --allow-unauthenticated admits every"),
    ],
)
def test_a_bad_listen_address_or_an_open_gateway_off_loopback_exits_2_saying_what_to_do(
    sqlite_url: str, listen: str, says: str
) -> None:
    code, err = _run(
        "--database-url", sqlite_url, "gateway", "--listen", listen, "--allow-unauthenticated"
    )
    assert code == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1


def test_an_unreachable_database_exits_1_in_one_line() -> None:
    url = "postgresql://gw:hunter2secret@127.0.0.1:1/llmctl"
    code, err = _run("--database-url", url, "gateway", "--listen", "127.0.0.1:0")
    assert code == 1
    assert "cannot use the database" in err
    assert "hunter2secret" not in err
    assert "Traceback" not in err
