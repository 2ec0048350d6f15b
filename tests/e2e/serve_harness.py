"""Running ``llmctl serve`` as a subprocess, as an operator does, for the ``test_serve*`` tests.

`Serve` starts the console script with settings in its environment (fast cycles, loopback HTTP
on a free port, JSON logs to a file), waits until ``/readyz`` answers, and stops it with a signal.
The helpers declare a fleet straight into the database (what ``llmctl apply`` commits), read the
download jobs, read the emulator's admin state, and parse ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from dwqueue import schema
from runtimestate import database
from tests import childprocess

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")

FAST = {
    "LLMCTL_CYCLE_INTERVAL_S": "1",
    "LLMCTL_DOWNLOAD_INTERVAL_S": "0.3",
    "LLMCTL_REAPER_INTERVAL_S": "1",
    "LLMCTL_HEARTBEAT_S": "0.3",
    "LLMCTL_LEASE_TTL_S": "5",
    "LLMCTL_CONNECT_TIMEOUT_S": "1",
    "LLMCTL_READ_TIMEOUT_S": "2",
    "LLMCTL_REQUEST_TIMEOUT_S": "3",
    "LLMCTL_CYCLE_DEADLINE_S": "4",
    "LLMCTL_PROBE_GRACE_S": "3",
}


class Serve:
    """One ``llmctl serve`` process."""

    def __init__(
        self,
        tmp_path: pathlib.Path,
        database_url: str,
        nats_url: str | None,
        prefix: str,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        name: str = "serve",
    ) -> None:
        self.port = childprocess.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"{name}.log"
        self.environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
        self.environ.update(FAST)
        self.environ.update(
            LLMCTL_DATABASE_URL=database_url,
            LLMCTL_SUBJECT_PREFIX=prefix,
            LLMCTL_DATA_DIR=str(tmp_path / f"{name}-data"),
            LLMCTL_HTTP_ADDRESS=f"127.0.0.1:{self.port}",
            LLMCTL_LOG_FORMAT="json",
        )
        if nats_url:
            self.environ["LLMCTL_NATS_URL"] = nats_url
        self.environ.update(env or {})
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [LLMCTL, "serve", *self.args], env=self.environ, stdout=out, stderr=out
            )
        return self

    async def ready(self, timeout_s: float = 20.0) -> Serve:
        """Wait until /readyz says ready; fails with the log when the process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.logs()}")
            status, _ = await self.get("/readyz")
            if status == 200:
                return self
            await asyncio.sleep(0.1)
        raise AssertionError(f"serve not ready in {timeout_s}s:\n{self.logs()}")

    async def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET ``path``; (0, error) when nothing answers."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(self.url + path) as response,
            ):
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, str(exc)

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{label="v",...}`` -> value (strict parse)."""
        status, body = await self.get("/metrics")
        assert status == 200, body
        samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> tuple[int, float]:
        """Send ``sig`` and wait; returns (exit status, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = await asyncio.to_thread(self.proc.wait, timeout_s)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


async def declare(url: str, text: str, *, nats_url: str | None = None, prefix: str = "") -> None:
    """Run ``llmctl apply -f`` as a user does; with a NATS URL the CLI asks serve for a cycle."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    env = {**os.environ, "LLMCTL_DATABASE_URL": url}
    if nats_url:
        env.update(LLMCTL_NATS_URL=nats_url, LLMCTL_SUBJECT_PREFIX=prefix)
    llmctl = str(pathlib.Path(sys.executable).parent / "llmctl")
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [llmctl, "apply", "-f", handle.name],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.unlink(handle.name)
    assert done.returncode == 0, done.stderr


def jobs(url: str) -> list[dict[str, Any]]:
    """Every download job row, as dicts."""
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            table = schema.download_jobs
            return [dict(row._mapping) for row in connection.execute(sa.select(table))]
    finally:
        engine.dispose()


async def emulator_state(url: str) -> list[dict[str, Any]]:
    """``GET /_emulator/state``: per node, its request counts, pulls and installed models."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/_emulator/state") as response,
    ):
        body: dict[str, Any] = await response.json()
    nodes: list[dict[str, Any]] = body["nodes"]
    return nodes


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout_s: float,
    what: str,
    serve: Serve | None = None,
) -> None:
    """Poll ``check`` every 0.1 s until it is true; fail with ``what`` (and serve's log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    tail = "\n".join(serve.logs().splitlines()[-40:]) if serve else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


def installed(node: Any) -> set[str]:
    """Display names (``qwen2:0.5b``) of the models on an emulated Ollama node."""
    return {model.spec.name for model in node.installed.values()}


def fleet(backends: dict[str, tuple[str, str, str]], models: list[str], pool: str = "main") -> str:
    """Backends (name -> (type, url, prune)) all serving ``models``, as one file."""
    docs = [
        f"apiVersion: llmctl/v1\nkind: Backend\nmetadata: {{name: {name}}}\n"
        f'spec: {{type: {kind}, url: "{url}", prune: {prune}, maxPulls: 2}}\n'
        for name, (kind, url, prune) in backends.items()
    ]
    docs += [f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{m}"}}\n' for m in models]
    quoted = ", ".join(f'"{m}"' for m in models)
    docs.append(
        f"apiVersion: llmctl/v1\nkind: Pool\nmetadata: {{name: {pool}}}\n"
        f"spec: {{backends: [{', '.join(backends)}], models: [{quoted}]}}\n"
    )
    return "---\n".join(docs)
