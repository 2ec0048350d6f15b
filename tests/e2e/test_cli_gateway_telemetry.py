"""What ``llmctl gateway`` tells its operator, as they meet it: ``/metrics``, the request log on
standard error (JSON lines when it is not a terminal), spans (OTLP to a collector and
``console``, through ``OTEL_TRACES_EXPORTER``) -- and that none of it, nor any reply, carries a
cloud provider's stored key, the client's key or a prompt, even when the provider echoes its
key in its error body."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client import parser
from typer.testing import CliRunner

import migrations
from controller import cli
from emulators import vllm
from gateway import keys
from runtimestate import credentials, database
from runtimestate.desired import spec, store
from runtimestate.reconcile import status
from tests.e2e import test_cli_gateway_keys
from tests.e2e.test_cli_gateway import LLMCTL
from tests.integration import gateway_harness
from tests.integration.gateway_harness import GENERATIVE
from tests.integration.test_resolver_feed import T0
from tests.unit.test_resolver import backend, model

PROVIDER_KEY = "sk-proj-" + "Qm9uZ28tdGhlLWtleS10aGF0LW11c3Qtbm90LWxlYWs"
PROMPT_MARKER = "prompt-marker-gannet-8830"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": f"Tell me about {PROMPT_MARKER}."}
]


@contextlib.asynccontextmanager
async def _echoing_cloud(sent_keys: list[str]) -> AsyncIterator[str]:
    """A cloud that refuses every call, echoing the key it was sent (as real ones do): 401 on
    odd calls, 500 on even ones (which the gateway retries elsewhere or reports)."""

    async def refuse(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        sent_keys.append(sent)
        calls = len(sent_keys)
        error = {"message": f"Incorrect API key provided: {sent}", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=401 if calls % 2 else 500)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    async with gateway_harness.listening(app) as url:
        yield url


@contextlib.asynccontextmanager
async def _collector(received: list[bytes]) -> AsyncIterator[str]:
    """An OTLP/HTTP trace collector keeping the bodies it is sent; yields its base URL."""

    async def export(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    async with gateway_harness.listening(app, "") as url:
        yield url


def _spans(received: list[bytes]) -> list[tuple[str, dict[str, object], dict[str, object]]]:
    """(name, attributes, resource attributes) of each span the collector received."""
    found = []
    for body in received:
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                found += [(s.name, _attributes(s.attributes), resource) for s in scope.spans]
    return found


def _attributes(values: Iterable[Any]) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in values}


async def _seed(url: str, vllm_url: str, cloud_url: str, secret_key: str) -> None:
    stored = credentials.encrypt(PROVIDER_KEY, secret_key)
    states = {
        "vllm-a": backend("vllm-a", model("qwen", 8192, caps=GENERATIVE), type_="vllm",
                          base_url=vllm_url),
        "cloud": backend("cloud", model("gpt-x", 8192, caps=GENERATIVE), type_="openai",
                         base_url=cloud_url),
    }  # fmt: skip
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await store.add_backends(
                session,
                [
                    spec.make_backend("vllm-a", "vllm", vllm_url),
                    spec.make_backend("cloud", "openai", cloud_url, credentials=stored),
                ],
            )
            await status.write_states(session, states, {}, T0)
    finally:
        await engine.dispose()


async def test_the_gateway_reports_metrics_logs_and_spans_and_never_a_key_or_prompt(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    secret_key = secrets.token_urlsafe(32)
    sent_keys: list[str] = []
    received: list[bytes] = []
    async with (
        vllm.running(served_model_names=["qwen"]) as emu,
        _echoing_cloud(sent_keys) as cloud_url,
        _collector(received) as collector_url,
    ):
        await _seed(postgres_url, emu.node_url(0), cloud_url, secret_key)
        token = await test_cli_gateway_keys.create_key(postgres_url, "team-a")
        env = {
            **os.environ,
            "LLMCTL_SECRET_KEY": secret_key,
            "OTEL_TRACES_EXPORTER": "otlp,console",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            "OTEL_SERVICE_NAME": "gateway-e2e",
        }
        child = await asyncio.create_subprocess_exec(
            LLMCTL, "--database-url", postgres_url, "gateway", "--listen", "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        assert child.stderr is not None
        try:
            first = (await asyncio.wait_for(child.stderr.readline(), 30)).decode()
            found = re.search(r"serving (http://\S+)/v1", first)
            assert found, first
            base = found.group(1)
            replies, scraped = await _drive(base, token)
            child.send_signal(signal.SIGTERM)  # the gateway exports its spans as it stops
            out, err = await asyncio.wait_for(child.communicate(), 20)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert child.returncode == 0
    assert sent_keys == [f"Bearer {PROVIDER_KEY}"] * 2  # the cloud got its stored key
    stdout, stderr = out.decode(), first + err.decode()
    _check_metrics(scraped)
    lines = [json.loads(line) for line in stderr.splitlines() if '"gateway.request"' in line]
    assert [(line["backend"], line["status"], line["error"]) for line in lines] == [
        ("vllm-a", 200, None),
        ("cloud", 401, "upstream"),
        ("cloud", 502, "upstream"),
    ]
    assert lines[0]["completion_tokens"] > 0
    assert {line["key"] for line in lines} == {"team-a"}
    assert lines[0]["level"] == "info"
    spans = _spans(received)
    chat = [(attributes, resource) for name, attributes, resource in spans if name == "chat qwen"]
    assert len(chat) == 2  # the request, and its one attempt
    assert chat[0][1]["service.name"] == "gateway-e2e"
    assert any(a.get("gen_ai.usage.output_tokens") for a, _ in chat)
    assert sum(1 for name, _, _ in spans if name == "chat gpt-x") == 4
    assert '"name": "chat qwen"' in stdout  # the console exporter too
    exported = b"".join(received).decode("utf-8", "replace")
    for shown in (replies, scraped, stderr, stdout, exported):
        assert PROVIDER_KEY[8:20] not in shown  # not the key, nor a long piece of it
        assert PROVIDER_KEY[-12:] not in shown
        assert token[keys.PREFIX_CHARS :] not in shown  # the key's secret past its prefix
    for shown in (scraped, stderr, stdout, exported):
        assert PROMPT_MARKER not in shown


async def _drive(base: str, token: str) -> tuple[str, str]:
    """One good chat and two refused by the cloud; returns what the client saw and a scrape."""
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)
    seen: list[str] = []
    try:
        reply = await client.chat.completions.create(model="qwen", messages=MESSAGES)
        seen.append(reply.model_dump_json())
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="gpt-x", messages=MESSAGES)
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="gpt-x", messages=MESSAGES)
        for caught in (refused.value, failed.value):
            seen.append(f"{caught.message} {caught.body} {caught.response.text}")
    finally:
        await client.close()
    deadline = time.monotonic() + 10  # a request is counted just after its reply's last byte
    async with httpx.AsyncClient() as http:
        while 'status="5xx"' not in (scraped := (await http.get(f"{base}/metrics")).text):
            assert time.monotonic() < deadline, scraped
            await asyncio.sleep(0.02)
    return "\n".join(seen), scraped


def _check_metrics(text: str) -> None:
    samples = [s for f in parser.text_string_to_metric_families(text) for s in f.samples]

    def value(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    requests = "llmctl_gateway_requests_total"
    assert value(requests, model="qwen", backend="vllm-a", status="2xx") == 1
    assert value(requests, model="gpt-x", backend="cloud", status="4xx") == 1
    assert value(requests, model="gpt-x", backend="cloud", status="5xx") == 1
    assert value("llmctl_gateway_attempts_total", backend="cloud", outcome="http_4xx") == 1
    assert value("llmctl_gateway_attempts_total", backend="cloud", outcome="http_5xx") == 1
    assert value("llmctl_gateway_tokens_total", backend="vllm-a", direction="output") > 0


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def test_an_unknown_trace_exporter_exits_2_naming_the_choices(sqlite_url: str) -> None:
    code, err = _run("--database-url", sqlite_url, "gateway", "--traces", "zipkin")
    assert code == 2
    assert "unknown exporter 'zipkin'; give otlp, console or none" in err
    assert len(err.strip().splitlines()) == 1


def test_otlp_over_grpc_exits_1_saying_to_use_http(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    code, err = _run("--database-url", sqlite_url, "gateway", "--traces", "otlp")
    assert code == 1
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in err
    assert len(err.strip().splitlines()) == 1


_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
sys.argv = ["llmctl", *sys.argv[1:]]
from controller import cli
cli.main()
"""


def test_tracing_without_the_otel_extra_exits_1_saying_what_to_install(sqlite_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, "--database-url", sqlite_url, "gateway"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "otlp"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'llmctl[otel]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
