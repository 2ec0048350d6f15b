"""``llmctl status``: the fleet on one screen, with figures from real cycles and a real serve."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pathlib
import signal
import subprocess
from typing import Any

from typer.testing import CliRunner

from controller import cli
from emulators import ollama
from tests.e2e import serve_harness as h
from tests.e2e.conftest import Cli, dump

NEVER = "0 0 1 1 *"  # a cron expression that does not come round during a test
# serve_harness.FAST beats every second; a replica is stale after three missed beats.
STALE_S = dt.timedelta(seconds=3 * float(h.FAST["LLMCTL_REAPER_INTERVAL_S"]))


def _fleet(llmctl: Cli, url: str) -> None:
    """gpu-0 on the emulator (serving qwen2), gpu-1 where nothing answers; two models."""
    assert llmctl("backend", "add", "gpu-0", "--url", url, "--type", "ollama").code == 0
    assert (
        llmctl("backend", "add", "gpu-1", "--url", "http://127.0.0.1:9", "--type", "ollama").code
        == 0
    )
    assert llmctl("model", "add", "qwen2:0.5b").code == 0
    assert llmctl("model", "add", "llama3.2:1b").code == 0


def test_status_sums_backends_models_and_downloads_and_shows_the_last_cycle(
    llmctl: Cli, database_url: str
) -> None:
    before = llmctl("status", "-o", "json").json()
    assert before["lastCycle"] is None
    with ollama.in_thread(installed=["qwen2:0.5b"]) as emu:
        _fleet(llmctl, emu.node_url(0))
        cycle = llmctl("reconcile", "--once")
        assert cycle.code in (0, 1), cycle.err  # gpu-1 cannot converge

    untouched = dump(database_url)
    doc = llmctl("status", "-o", "json").json()
    assert dump(database_url) == untouched  # status writes nothing
    assert doc["backends"]["total"] == 2
    assert doc["backends"]["phases"]["Ready"] == 1
    assert [b["name"] for b in doc["backends"]["notReady"]] == ["gpu-1"]
    assert doc["backends"]["notReady"][0]["phase"] in ("Degraded", "Unreachable")
    assert doc["models"] == {"ready": 1, "desired": 4}  # qwen2 on gpu-0 of two models on two
    assert doc["downloads"]["queued"] == 1  # llama3.2:1b on gpu-0, queued by the cycle
    assert doc["downloads"]["running"] == 0
    last = doc["lastCycle"]
    assert (last["cycle"], last["role"]) == (1, "once")
    assert last["durationS"] > 0
    assert doc["replicas"] == []  # a one-off cycle is no running replica

    table = llmctl("status")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].startswith("BACKENDS    2   Ready 1")
    assert lines[1].startswith("NOT READY   gpu-1 (")
    assert "1/4 ready" in lines[2]
    assert "0 running   1 queued" in lines[3]
    assert lines[4].startswith("LAST CYCLE  #1 at ")
    assert lines[5] == "REPLICAS    0 running"

    yaml_doc = llmctl("status", "-o", "yaml")
    assert "lastCycle:" in yaml_doc.out


def test_status_exits_1_in_one_line_when_the_database_is_unreachable() -> None:
    url = "postgresql://llmctl@127.0.0.1:1/llmctl"
    result = CliRunner().invoke(cli.app, ["--database-url", url, "status"])
    assert result.exit_code == 1
    assert "cannot use the database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


async def _status(url: str) -> dict[str, Any]:
    """``llmctl status -o json`` as another process on the replicas' database."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [h.LLMCTL, "--database-url", url, "status", "-o", "json"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


async def test_status_lists_a_running_serve_replica_until_it_stops_or_its_heartbeat_goes_stale(
    tmp_path: pathlib.Path, postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    # One cycle at start, then none: what keeps them running is their heartbeat alone.
    never = ("--cycle-cron", NEVER)
    first = h.Serve(tmp_path, postgres_url, nats_url, nats_prefix, args=never, name="first")
    second = h.Serve(tmp_path, postgres_url, nats_url, nats_prefix, args=never, name="second")
    first.start()
    second.start()
    try:
        await first.ready()
        await second.ready()
        seen: dict[str, Any] = {}

        async def both_running() -> bool:
            seen.update(await _status(postgres_url))
            return len(seen["replicas"]) == 2 and seen["lastCycle"] is not None

        await h.eventually(both_running, 30, "two running replicas in llmctl status", first)
        assert seen["lastCycle"]["role"] == "serve"

        async def beating_past_their_cycle() -> bool:
            seen.update(await _status(postgres_url))
            cycled = _at(seen["lastCycle"]["startedAt"])
            beats = [_at(r["heartbeatAt"]) for r in seen["replicas"]]
            return len(beats) == 2 and all(b - cycled > STALE_S for b in beats)

        await h.eventually(beating_past_their_cycle, 30, "heartbeats between cycles", first)

        code, _ = await first.stop(signal.SIGTERM)
        assert code == 0

        async def one_running() -> bool:
            seen.update(await _status(postgres_url))
            return len(seen["replicas"]) == 1

        await h.eventually(one_running, 5, "a stopped replica leaves at once", second)
        assert second.proc is not None
        second.proc.send_signal(signal.SIGKILL)  # no goodbye: only its heartbeat stops
        await h.eventually(
            lambda: _none_running(postgres_url), 30, "a killed replica going stale", second
        )
    finally:
        first.kill()
        second.kill()


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _none_running(url: str) -> bool:
    running: list[Any] = (await _status(url))["replicas"]
    return not running
