"""``llmctl resolve`` against the persisted status: the choice, fallbacks, explanations, exits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import typer
from typer.testing import CliRunner

import migrations
from controller import cli
from controller import resolve as resolve_cli
from runtimestate import credentials, database
from runtimestate.desired import spec, store
from runtimestate.reconcile import status
from tests.integration.test_resolver_feed import T0
from tests.unit.test_resolver import backend, model

STATES = {
    "gpu-1": backend("gpu-1", model("qwen2:7b", 8192, loaded=True)),
    "gpu-2": backend("gpu-2", model("qwen2:7b", 32768)),
    "gpu-3": backend("gpu-3", model("qwen2:7b", 131072), phase="Unreachable"),
    "gpu-4": backend("gpu-4", model("qwen2:7b", 65536), phase="Degraded"),
    "cloud": backend("cloud", model("gpt-4o-mini", 128000), type_="openai"),
}


def _app() -> typer.Typer:
    # The lead registers the command on the root app; the test composes the same thing.
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(cli.main_options)
    app.command("resolve")(resolve_cli.resolve_command)
    return app


async def _seed(url: str) -> None:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await status.write_states(session, STATES, {}, T0)
            creds = credentials.Credentials(credentials.CredentialKind.ENV, env_var="CLOUD_KEY")
            value = spec.make_backend(
                "cloud", "openai", "https://api.example.com/v1", credentials=creds
            )
            await store.add_backends(session, [value])
    finally:
        await engine.dispose()


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def llmctl(sqlite_url: str) -> Run:
    migrations.upgrade(sqlite_url)
    asyncio.run(_seed(sqlite_url))
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(
            _app(), ["--database-url", sqlite_url, "resolve", *args], env={"CLOUD_KEY": "sk-hidden"}
        )
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return run


def test_resolve_prints_the_choice_and_the_fallbacks(llmctl: Run) -> None:
    code, out, _ = llmctl("qwen2:7b", "--policy", "highest_context")
    assert code == 0
    chosen, fallbacks = out.split("FALLBACKS")
    assert "gpu-2" in chosen
    assert "gpu-1" not in chosen
    assert "gpu-1" in fallbacks
    assert "gpu-3" not in out


def test_resolve_explain_says_why_others_were_excluded(llmctl: Run) -> None:
    code, out, _ = llmctl("qwen2:7b", "--min-context", "16000", "--explain", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["provider"]["backend"] == "gpu-2"
    assert doc["fallbacks"] == []
    reasons = {(e["backend"], e["reason"]) for e in doc["excluded"]}
    assert reasons == {
        ("gpu-1", "context_too_small"),
        ("gpu-3", "backend_not_ready"),
        ("gpu-4", "backend_degraded"),
        ("cloud", "model_absent"),
    }


def test_resolve_never_prints_a_key(llmctl: Run) -> None:
    for fmt in ("json", "yaml", "table"):
        code, out, err = llmctl("gpt-4o-mini", "--type", "openai", "--explain", "-o", fmt)
        assert code == 0
        assert "sk-hidden" not in out + err
    code, out, _ = llmctl("gpt-4o-mini", "--type", "openai", "-o", "json")
    provider = json.loads(out)["provider"]
    assert provider["baseUrl"] == "http://cloud:11434"
    # Where the key could go, nothing does: the provider's fields are exactly these.
    assert set(provider) == {
        "backend", "backendId", "type", "baseUrl", "model", "contextLength", "capabilities",
        "loaded", "phase",
    }  # fmt: skip


def test_resolve_takes_the_first_preferred_model_that_qualifies_among_the_allowed_types(
    llmctl: Run,
) -> None:
    args = ["mistral", "gpt-4o-mini", "qwen2:7b", "--policy", "highest_context", "-o", "json"]
    code, out, _ = llmctl(*args, "--type", "openai", "--type", "ollama")
    assert code == 0
    doc = json.loads(out)
    assert doc["provider"]["backend"] == "cloud"
    assert [f["backend"] for f in doc["fallbacks"]] == ["gpu-2", "gpu-1"]
    code, out, _ = llmctl(*args, "--type", "ollama")
    assert code == 0
    doc = json.loads(out)
    assert (doc["provider"]["backend"], doc["provider"]["model"]) == ("gpu-2", "qwen2:7b")


def test_resolve_keeps_a_session_on_one_backend_and_spreads_sessions(llmctl: Run) -> None:
    def chosen(key: str) -> str:
        code, out, _ = llmctl("qwen2:7b", "--policy", "sticky", "--session", key, "-o", "json")
        assert code == 0
        backend_name: str = json.loads(out)["provider"]["backend"]
        return backend_name

    first = {key: chosen(key) for key in (f"user-{i}" for i in range(16))}
    assert set(first.values()) == {"gpu-1", "gpu-2"}
    assert {key: chosen(key) for key in first} == first


def test_resolve_uses_a_degraded_backend_only_when_allowed(llmctl: Run) -> None:
    code, _, err = llmctl("qwen2:7b", "--min-context", "40000")
    assert code == 1
    assert (
        "needs 40000 tokens; the largest available, qwen2:7b on gpu-2, has 32768 "
        "(gpu-4 is Degraded and big enough: allow degraded backends to use it)"
    ) in " ".join(err.split())
    code, out, _ = llmctl("qwen2:7b", "--min-context", "40000", "--allow-degraded", "-o", "json")
    assert code == 0
    assert json.loads(out)["provider"]["backend"] == "gpu-4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["qwen2:7b", "--min-context", "200000"],
            "needs 200000 tokens; the largest available, qwen2:7b on gpu-2, has 32768",
        ),
        (["mistral"], "no ready backend serves mistral"),
        (
            ["qwen2:7b", "--type", "vllm"],
            "allows only vllm backends; qwen2:7b is served only by other types of backend (gpu-1, gpu-2)",
        ),
    ],
)
def test_resolve_exits_1_with_the_diagnostic_when_nothing_qualifies(
    llmctl: Run, args: list[str], message: str
) -> None:
    code, _, err = llmctl(*args)
    assert code == 1
    assert message in " ".join(err.split())


def test_resolve_failure_in_json_names_the_error_and_the_exclusions(llmctl: Run) -> None:
    code, out, _ = llmctl("qwen2:7b", "--capability", "embed", "--explain", "-o", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc["provider"] is None
    assert doc["error"]["type"] == "NoSatisfactoryModel"
    assert {e["reason"] for e in doc["excluded"]} == {
        "capability_missing",
        "backend_not_ready",
        "backend_degraded",
        "model_absent",
    }


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (["--policy", "fastest"], ["Invalid value for '--policy'", "'fastest' is not one of"]),
        (["--capability", "vision"], ["Invalid value for '--capability'", "'vision' is not one"]),
        (["--min-context", "0"], ["Invalid value for '--min-context'", "greater than or equal"]),
        (["--min-context", "-5"], ["Invalid value for '--min-context'", "greater than or equal"]),
        (["--type", "tpu"], ["Invalid value for '--type'", "'tpu' is not one of"]),
        (["--policy", "sticky"], ["--policy sticky needs a session key: add --session KEY"]),
    ],
)
def test_resolve_exits_2_on_invalid_input(
    llmctl: Run, args: list[str], messages: list[str]
) -> None:
    code, out, err = llmctl("qwen2:7b", *args)
    assert code == 2
    said = " ".join(err.replace("│", " ").split())
    for message in messages:
        assert message in said
    assert out == ""


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (["bad name!"], "model name 'bad name!' is empty or contains whitespace"),
        (["qwen2:7b", "llama3:-bad"], "model name 'llama3:-bad' has an invalid tag '-bad'"),
        (["a/b/c/d"], "model name 'a/b/c/d' has more than host/namespace/model parts"),
    ],
)
def test_resolve_exits_2_on_a_model_name_that_no_declaration_could_have(
    llmctl: Run, models: list[str], message: str
) -> None:
    code, out, err = llmctl(*models)
    assert code == 2, err
    assert message in " ".join(err.split())
    assert out == ""
