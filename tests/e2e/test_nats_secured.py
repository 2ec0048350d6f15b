"""`serve`, `watch` and the CLI against NATS servers that demand TLS from a test CA, an NKey
user or a credentials file (issue 20).

One `serve` per server kind (module-scoped, on its own SQLite file) is configured as deployed,
through ``LLMCTL_NATS_*`` variables; the CLI gets the credential as flags. Each kind works with
its credential, and a wrong or missing one stops the command with one line naming what to fix,
exit 1, no traceback, and no secret in the output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import os
import pathlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from controller import cli
from dwqueue import events, jobs
from tests import natscredentials, natssecure
from tests.e2e import serve_harness as h
from tests.e2e.conftest import Result
from tests.e2e.test_cli_downloads import enqueue

WAIT_S = 20.0
ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = "from controller.cli import main; main()"  # the CLI as its console script runs it


@dataclasses.dataclass
class Deployment:
    """A running `serve` on a secured server, its SQLite database and subject prefix."""

    credential: natscredentials.Credential
    database_url: str
    prefix: str
    serve: h.Serve

    def cli(self, *args: str, wrong: bool = False, database_url: str | None = None) -> Result:
        """``llmctl`` in-process with the (right or wrong) credential flags and the prefix, on
        serve's database or ``database_url``."""
        nats_flags = self.credential.cli_wrong() if wrong else self.credential.cli()
        url = database_url or self.database_url
        return run_cli(url, *nats_flags, "--subject-prefix", self.prefix, *args)


def run_cli(database_url: str, *args: str) -> Result:
    result = CliRunner().invoke(cli.app, ["--database-url", database_url, *args], env=_NO_LLMCTL)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


# In-process commands must not pick up the deployment's variables from the test's environment.
_NO_LLMCTL: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LLMCTL_")}


@pytest.fixture(scope="module", params=natscredentials.KINDS)
def deployment(
    request: pytest.FixtureRequest,
    secure_nats: natssecure.Servers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    credential = natscredentials.of(request.param, secure_nats)
    directory = tmp_path_factory.mktemp(f"serve-{credential.kind}")
    database_url = f"sqlite:///{directory / 'llmctl.db'}"
    prefix = f"t{secrets.token_hex(6)}"
    env = {**credential.env, "LLMCTL_CYCLE_INTERVAL_S": "3600"}  # only triggers run cycles
    serve = h.Serve(directory, database_url, credential.url, prefix, env=env).start()
    try:
        asyncio.run(serve.ready())
        yield Deployment(credential, database_url, prefix, serve)
    finally:
        serve.kill()


async def test_serve_publishes_cycles_and_a_cli_change_triggers_one(
    deployment: Deployment,
) -> None:
    client = await deployment.credential.connect()
    try:
        cycles = await client.subscribe(f"{deployment.prefix}.v1.cycles")
        await client.flush()
        name = f"gpu-{secrets.token_hex(3)}"
        added = await asyncio.to_thread(
            deployment.cli,
            "backend",
            "add",
            name,
            "--type",
            "ollama",
            "--url",
            "http://127.0.0.1:9",
        )
        assert added.code == 0, added.err
        summary = await _next_with_backends(cycles)
        assert summary["backends"] >= 1, deployment.serve.logs()
    finally:
        await client.close()


async def test_downloads_cancel_sends_the_cancel_request(
    deployment: Deployment, sqlite_url: str
) -> None:
    # A database of its own: serve's download worker would claim (and fail) the job first.
    job = await asyncio.to_thread(enqueue, sqlite_url, "gpu-1", "llama3")
    client = await deployment.credential.connect()
    try:
        requests = await client.subscribe(f"{deployment.prefix}.v1.control.cancel")
        await client.flush()
        cancel = functools.partial(deployment.cli, database_url=sqlite_url)
        cancelled = await asyncio.to_thread(cancel, "downloads", "cancel", job.id)
        assert cancelled.code == 0, cancelled.err
        assert cancelled.out.strip() == f"download/{job.id} cancelled"
        assert "NATS" not in cancelled.err  # published: no warning that it could not be
        message = await requests.next_msg(timeout=WAIT_S)
        assert json.loads(message.data) == {"job_id": job.id}
    finally:
        await client.close()


async def test_downloads_cancel_with_a_wrong_credential_saves_it_and_exits_1_naming_the_fix(
    deployment: Deployment, sqlite_url: str
) -> None:
    job = await asyncio.to_thread(enqueue, sqlite_url, "gpu-1", "llama3")
    cancel = functools.partial(deployment.cli, database_url=sqlite_url, wrong=True)
    cancelled = await asyncio.to_thread(cancel, "downloads", "cancel", job.id)
    _assert_one_line_failure(cancelled.code, cancelled.out, cancelled.err, deployment.credential)
    assert "the change is saved" in cancelled.err
    shown = await asyncio.to_thread(run_cli, sqlite_url, "downloads", "get", job.id, "-o", "json")
    assert json.loads(shown.out)["state"] == "cancelled"  # the database is the truth


@pytest.mark.parametrize("kind", ["mtls", "password", "token"])
async def test_downloads_cancel_reaches_a_server_wanting_a_certificate_password_or_token(
    kind: str, secure_nats: natssecure.Servers, tmp_path: pathlib.Path, nats_prefix: str
) -> None:
    credential = natscredentials.of(kind, secure_nats)
    database_url = f"sqlite:///{tmp_path / 'llmctl.db'}"
    job = await asyncio.to_thread(enqueue, database_url, "gpu-1", "llama3")
    client = await credential.connect()
    try:
        requests = await client.subscribe(f"{nats_prefix}.v1.control.cancel")
        await client.flush()
        args = (*credential.cli(), "--subject-prefix", nats_prefix, "downloads", "cancel", job.id)
        cancelled = await asyncio.to_thread(run_cli, database_url, *args)
        assert cancelled.code == 0, cancelled.err
        assert "NATS" not in cancelled.err
        assert json.loads((await requests.next_msg(timeout=WAIT_S)).data) == {"job_id": job.id}
    finally:
        await client.close()


async def test_watch_replays_a_download_from_the_stream_serve_declared(
    deployment: Deployment,
) -> None:
    job = jobs.new_job_id(dt.datetime.now(dt.UTC))
    done = events.DownloadSucceeded(
        job_id=jobs.JobId(job), backend="gpu-1", model="llama3", seq=3,
        at=dt.datetime.now(dt.UTC), attempt=1, max_attempts=5,
    )  # fmt: skip
    # A JetStream publish is acknowledged only by a stream: serve's, declared once it connects.
    await _replay_stream_declared(deployment.serve)
    client = await deployment.credential.connect()
    try:
        subject = f"{deployment.prefix}.v1.downloads.gpu-1.{job}"
        await client.jetstream(timeout=WAIT_S).publish(subject, done.to_wire())
    finally:
        await client.close()
    code, out, err = await _watch(deployment, "--json", "--exit-when-idle", "--timeout", "15")
    assert code == 0, err
    shown = {json.loads(line)["job_id"]: json.loads(line)["type"] for line in out.splitlines()}
    assert shown[job] == "succeeded"  # (other tests' downloads on this prefix show too)


async def _replay_stream_declared(serve: h.Serve) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (await serve.metrics()).get("llmctl_events_replay_stream") != 1:
        assert asyncio.get_running_loop().time() < deadline, serve.logs()
        await asyncio.sleep(0.05)


def test_serve_with_a_wrong_credential_exits_1_with_one_line_naming_the_fix(
    deployment: Deployment, tmp_path: pathlib.Path
) -> None:
    credential = deployment.credential
    env = natscredentials.environment_of(credential.wrong_flags)
    # A database of its own: the deployment's serve holds its SQLite file.
    database_url = f"sqlite:///{tmp_path / 'llmctl.db'}"
    serve = h.Serve(tmp_path, database_url, credential.url, deployment.prefix, env=env)
    done = subprocess.run(
        [h.LLMCTL, "serve"], env=serve.environ, capture_output=True, text=True, timeout=60
    )
    _assert_one_line_failure(done.returncode, done.stdout, done.stderr, credential)


def test_watch_with_a_wrong_credential_exits_1_with_one_line_naming_the_fix(
    deployment: Deployment,
) -> None:
    watched = deployment.cli("watch", "--timeout", "10", wrong=True)
    _assert_one_line_failure(watched.code, watched.out, watched.err, deployment.credential)


def test_watch_without_the_credential_exits_1_with_one_line_naming_the_fix(
    deployment: Deployment,
) -> None:
    watched = run_cli(
        deployment.database_url, "--nats-url", deployment.credential.url, "watch", "--timeout", "10"
    )
    _assert_one_line_failure(watched.code, watched.out, watched.err, deployment.credential)


# What the one line must name, per kind: the option to fix.
_FIX = {"tls": "--nats-ca", "nkey": "--nats-nkey", "creds": "--nats-creds"}


def _assert_one_line_failure(
    code: int, out: str, err: str, credential: natscredentials.Credential
) -> None:
    assert code == 1, (out, err)
    said = [line for line in err.splitlines() if line.strip() and not _is_json(line)]
    assert len(said) == 1, err
    assert "Traceback" not in out + err
    assert (
        _FIX[credential.kind] in said[0] or _FIX[credential.kind][2:].replace("-", "_") in said[0]
    )
    for secret in credential.secrets:
        assert secret not in out + err


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


async def _next_with_backends(subscription: Any) -> dict[str, Any]:
    """The first cycle summary that counts a backend (the cycle at start may count none)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        message = await subscription.next_msg(timeout=deadline - asyncio.get_running_loop().time())
        summary: dict[str, Any] = json.loads(message.data)
        if summary["backends"]:
            return summary


async def _watch(deployment: Deployment, *args: str) -> tuple[int, str, str]:
    """``llmctl watch`` as a child process with the credential flags."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", SCRIPT, "--database-url", deployment.database_url),
        *deployment.credential.cli(),
        *("--subject-prefix", deployment.prefix, "watch", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=environ,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_serve_without_the_creds_file_exits_1_with_one_line_naming_the_fix(
    secure_nats: natssecure.Servers, tmp_path: pathlib.Path, nats_prefix: str
) -> None:
    credential = natscredentials.of("creds", secure_nats)
    serve = h.Serve(tmp_path, f"sqlite:///{tmp_path / 'llmctl.db'}", credential.url, nats_prefix)
    done = subprocess.run(
        [h.LLMCTL, "serve"], env=serve.environ, capture_output=True, text=True, timeout=60
    )
    _assert_one_line_failure(done.returncode, done.stdout, done.stderr, credential)


async def test_a_nats_url_with_a_ca_file_speaks_tls_to_the_server(
    secure_nats: natssecure.Servers, sqlite_url: str, nats_prefix: str
) -> None:
    credential = natscredentials.of("tls", secure_nats)
    plain_url = credential.server.server.url  # nats://, the same port
    job = await asyncio.to_thread(enqueue, sqlite_url, "gpu-1", "llama3")
    client = await credential.connect()
    try:
        requests = await client.subscribe(f"{nats_prefix}.v1.control.cancel")
        await client.flush()
        args = ("--nats-url", plain_url, *credential.flags, "--subject-prefix", nats_prefix)
        cancelled = await asyncio.to_thread(
            run_cli, sqlite_url, *args, "downloads", "cancel", job.id
        )
        assert cancelled.code == 0, cancelled.err
        assert json.loads((await requests.next_msg(timeout=WAIT_S)).data) == {"job_id": job.id}
    finally:
        await client.close()
