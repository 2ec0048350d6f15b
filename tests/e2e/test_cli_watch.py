"""``llmctl watch`` against a real NATS server, run as a child process so no test can hang."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import pathlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from typer.testing import CliRunner

from controller import cli, embedded_nats
from dwqueue import events, jobs, natsauth, publisher
from tests import childprocess
from tests.e2e.test_cli_downloads import enqueue, start_pulling

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The CLI as its console script runs it.
SCRIPT = "from controller.cli import main; main()"
WAIT_S = 20.0


def _event(
    cls: type[events.DownloadEvent], job_id: str, seq: int, backend: str = "gpu-1", **kw: Any
) -> events.DownloadEvent:
    return cls(
        job_id=jobs.JobId(job_id),
        backend=backend,
        model="llama3",
        seq=seq,
        at=dt.datetime.now(dt.UTC),
        max_attempts=5,
        **kw,
    )


def _progress(job_id: str, seq: int, completed: int) -> events.DownloadEvent:
    return _event(
        events.DownloadProgressed,
        job_id,
        seq,
        status="pulling 6a0746a1ec1a",
        completed=completed,
        total=1000,
        percent=completed / 10,
        rate_bps=12.3e6,
        eta_s=57.0,
        attempt=1,
    )


def _job() -> str:
    return jobs.new_job_id(dt.datetime.now(dt.UTC))


@pytest.fixture
async def pub(nats_url: str, nats_prefix: str) -> AsyncIterator[publisher.Publisher]:
    """A started publisher whose replay stream exists (as the controller's would)."""
    started = publisher.Publisher(nats_url, prefix=nats_prefix, reconnect_wait_s=0.2)
    await started.start()
    try:
        for _ in range(200):  # up to 10 s for the stream to be declared
            if started.jetstream is not None:
                break
            await asyncio.sleep(0.05)
        assert started.jetstream is True
        yield started
    finally:
        await started.close()


async def _send(pub: publisher.Publisher, *sent: events.DownloadEvent) -> None:
    for event in sent:
        assert await pub.publish(event)
    assert await pub.flush()


async def _subscribed(nats_url: str, prefix: str, token: str | None = None) -> None:
    """Wait until a watch has its replaying consumer on the stream."""
    nc = await nats.connect(nats_url, token=token)
    try:
        for _ in range(int(WAIT_S / 0.05)):
            info = await nc.jetstream().stream_info(events.stream_name(prefix))
            if info.state.consumer_count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no watch subscribed within {WAIT_S} s")
    finally:
        await nc.close()


@dataclasses.dataclass
class Watching:
    proc: asyncio.subprocess.Process

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT_S)
        assert raw, "watch ended before printing another event"
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    async def finish(self) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), WAIT_S)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def watching(
    database_url: str, nats_url: str, prefix: str, *args: str
) -> AsyncIterator[Watching]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", SCRIPT, "--database-url", database_url),
        *("--nats-url", nats_url, "--subject-prefix", prefix, "watch", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=environ,
    )
    try:
        yield Watching(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_watch_started_mid_download_shows_its_current_progress_at_once(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    job = _job()
    await _send(
        pub,
        _event(events.DownloadQueued, job, 1),
        _event(events.DownloadStarted, job, 2, attempt=1),
        _progress(job, 3, 300),
    )
    async with watching(sqlite_url, nats_url, nats_prefix, "--json") as w:
        first = await w.line()
        assert (first["type"], first["job_id"], first["seq"]) == ("progress", job, 3)
        assert (first["completed"], first["total"], first["percent"]) == (300, 1000, 30.0)
        await _send(pub, _progress(job, 4, 600))
        second = await w.line()
        assert (second["type"], second["seq"], second["completed"]) == ("progress", 4, 600)


async def test_json_prints_one_event_per_line_and_exit_when_idle_ends_after_the_last_download(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    job = _job()
    await _send(pub, _event(events.DownloadQueued, job, 1))
    async with watching(sqlite_url, nats_url, nats_prefix, "--json", "--exit-when-idle") as w:
        assert (await w.line())["type"] == "queued"
        await _send(
            pub,
            _event(events.DownloadStarted, job, 2, attempt=1),
            _progress(job, 3, 500),
            _event(events.DownloadSucceeded, job, 4, attempt=1, completed=1000, total=1000),
        )
        code, out, err = await w.finish()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    # The stream keeps one event per job, so a watcher may skip a superseded progress event;
    # never the newest, and never out of order.
    seqs = [e["seq"] for e in lines]
    assert seqs == sorted(set(seqs))
    assert set(seqs) <= {2, 3, 4}
    assert (lines[-1]["type"], lines[-1]["seq"]) == ("succeeded", 4)
    assert all(events.from_wire(line.encode()).job_id == job for line in out.splitlines())


async def test_exit_when_idle_exits_at_once_when_nothing_is_queued_or_running(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    finished = _job()
    await _send(pub, _event(events.DownloadSucceeded, finished, 4, attempt=1))
    async with watching(sqlite_url, nats_url, nats_prefix, "--json", "--exit-when-idle") as w:
        code, out, err = await w.finish()
    assert code == 0, err
    assert [json.loads(line)["job_id"] for line in out.splitlines()] == [finished]


async def test_exit_when_idle_times_out_with_code_1_while_a_download_is_still_running(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    await _send(pub, _progress(_job(), 3, 100))
    args = ("--json", "--exit-when-idle", "--timeout", "1")
    async with watching(sqlite_url, nats_url, nats_prefix, *args) as w:
        code, _, err = await w.finish()
    assert code == 1
    assert "timed out after 1 s with 1 download(s) still queued or running" in err


async def test_a_watch_shows_the_database_state_of_active_jobs_that_nats_never_mentioned(
    sqlite_url: str, nats_url: str, nats_prefix: str
) -> None:
    job = await asyncio.to_thread(enqueue, sqlite_url, "gpu-1", "llama3")
    await asyncio.to_thread(start_pulling, sqlite_url)
    async with watching(sqlite_url, nats_url, nats_prefix, "--json", "--timeout", "2") as w:
        code, out, err = await w.finish()
    assert code == 0, err
    (line,) = out.splitlines()
    event = events.from_wire(line.encode())
    assert (type(event), event.job_id, event.status) == (
        events.DownloadProgressed,
        job.id,
        "pulling 6a0746a1ec1a",
    )
    assert (event.completed, event.total, event.percent) == (300_000_000, 10**9, 30.0)


async def test_a_watch_of_one_backend_prints_only_that_backends_events(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    wanted = _job()
    await _send(
        pub,
        _event(events.DownloadQueued, _job(), 1, backend="gpu-1"),
        _event(events.DownloadQueued, wanted, 1, backend="gpu-2"),
    )
    args = ("--json", "--backend", "gpu-2", "--timeout", "2")
    async with watching(sqlite_url, nats_url, nats_prefix, *args) as w:
        code, out, err = await w.finish()
    assert code == 0, err
    assert [json.loads(line)["job_id"] for line in out.splitlines()] == [wanted]


async def test_progress_bars_show_model_backend_percent_rate_eta_and_phase(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    await _send(pub, _progress(_job(), 3, 300))
    async with watching(sqlite_url, nats_url, nats_prefix, "--timeout", "2") as w:
        code, out, err = await w.finish()
    assert code == 0, err
    (bar,) = [line for line in out.splitlines() if line.strip()]
    fields = bar.split()
    assert fields[:2] == ["llama3", "gpu-1"]
    assert fields[3:] == ["30.0%", "12.3", "MB/s", "57s", "pulling", "6a0746a1ec1a"]


async def test_finished_downloads_keep_their_bar_with_the_final_state(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    ok, broken = _job(), _job()
    await _send(pub, _progress(ok, 3, 300), _progress(broken, 3, 100))
    async with watching(sqlite_url, nats_url, nats_prefix, "--exit-when-idle") as w:
        await _subscribed(nats_url, nats_prefix)  # bars render at the end: nothing to read yet
        failure = "pull model manifest: file does not exist"
        await _send(
            pub,
            _event(events.DownloadSucceeded, ok, 4, completed=1000, total=1000),
            _event(
                events.DownloadFailed,
                broken,
                4,
                completed=100,
                total=1000,
                percent=10.0,
                error=failure,
                error_class="permanent",
            ),
        )
        code, out, err = await w.finish()
    assert code == 0, err
    bars = [" ".join(line.split()) for line in out.splitlines() if line.strip()]
    assert len(bars) == 2
    assert any(bar.endswith("100.0% succeeded") for bar in bars), bars
    assert any(bar.endswith(f"10.0% failed: {failure}") for bar in bars), bars


async def test_ctrl_c_stops_a_watch_quietly_with_code_0(
    sqlite_url: str, nats_url: str, nats_prefix: str, pub: publisher.Publisher
) -> None:
    await _send(pub, _event(events.DownloadQueued, _job(), 1))
    async with watching(sqlite_url, nats_url, nats_prefix, "--json") as w:
        assert (await w.line())["type"] == "queued"  # running and subscribed
        w.proc.send_signal(signal.SIGINT)
        code, _, err = await w.finish()
    assert code == 0
    assert "Traceback" not in err
    assert "Aborted" not in err


def test_watch_without_a_nats_url_exits_2_and_says_how_to_give_one(
    sqlite_url: str, tmp_path: pathlib.Path
) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["--database-url", sqlite_url, "watch"],
        env={"LLMCTL_NATS_URL": None, "LLMCTL_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "--nats-url" in result.stderr
    assert "LLMCTL_NATS_URL" in result.stderr
    assert f"none announced in {tmp_path}" in " ".join(result.stderr.split())


async def test_watch_exits_1_when_nats_cannot_be_reached(sqlite_url: str) -> None:
    async with watching(sqlite_url, "nats://127.0.0.1:1", "llmctl", "--json") as w:
        code, out, err = await w.finish()
    assert (code, out) == (1, "")
    assert "cannot connect to NATS at nats://127.0.0.1:1" in err


def test_watch_gives_up_on_an_unreachable_nats_within_its_timeout(sqlite_url: str) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(
        cli.app,
        [
            *("--database-url", sqlite_url, "--nats-url", "nats://127.0.0.1:1"),
            *("watch", "--json", "--timeout", "2"),
        ],
    )
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "cannot connect to NATS at nats://127.0.0.1:1" in result.stderr
    assert took < 4, took  # it took 6.5 s: the connect had a 5 s budget of its own


async def test_embedded_nats_listens_on_a_port_of_its_data_directory_or_any_when_taken(
    tmp_path: pathlib.Path,
) -> None:
    port = embedded_nats.default_port(tmp_path)
    assert port == embedded_nats.default_port(tmp_path / "sub" / "..")  # a function of the path
    assert port in embedded_nats.PORT_RANGE
    first = embedded_nats.EmbeddedNats(tmp_path)
    await asyncio.to_thread(first.start)
    try:
        assert first.port == port
        assert embedded_nats.running_url(tmp_path) == f"nats://127.0.0.1:{port}"
        taken = embedded_nats.EmbeddedNats(tmp_path)  # its port is in use: any free one
        await asyncio.to_thread(taken.start, announce=False)
        try:
            assert taken.port != port
            nc = await nats.connect(taken.url, token=taken.token)
            await nc.close()
        finally:
            taken.stop()
    finally:
        first.stop()
    assert embedded_nats.running_url(tmp_path) is None
    late = embedded_nats.EmbeddedNats(tmp_path)  # chose its port while it was free
    assert late.port == port
    with socket.socket() as squatter:  # taken before the server binds it
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        await asyncio.to_thread(late.start, announce=False)
        try:
            assert late.port != port
            assert late.url == f"nats://127.0.0.1:{late.port}"
            nc = await nats.connect(late.url, token=late.token)
            await nc.close()
        finally:
            late.stop()


async def _publisher(url: str, prefix: str, token: str) -> publisher.Publisher:
    auth = natsauth.NatsAuth(token=token)  # the embedded server's
    started = publisher.Publisher(url, prefix=prefix, auth=auth, reconnect_wait_s=0.2)
    await started.start()
    for _ in range(200):  # up to 10 s for the stream to be declared
        if started.jetstream is not None:
            break
        await asyncio.sleep(0.05)
    assert started.jetstream is True
    return started


async def test_watch_finds_a_running_serves_embedded_nats_and_follows_it_to_a_new_port(
    tmp_path: pathlib.Path, sqlite_url: str, nats_prefix: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first = embedded_nats.EmbeddedNats(data_dir)
    await asyncio.to_thread(first.start)  # announces its URL in data_dir, as serve does
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    environ["LLMCTL_DATA_DIR"] = str(data_dir)  # no --nats-url, no LLMCTL_NATS_URL
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", SCRIPT, "--database-url", sqlite_url),
        *("--subject-prefix", nats_prefix, "watch", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=environ,
    )
    w = Watching(proc)
    second: embedded_nats.EmbeddedNats | None = None
    try:
        pub = await _publisher(first.url, nats_prefix, first.token)
        job = _job()
        try:
            await _subscribed(first.url, nats_prefix, first.token)
            await _send(pub, _event(events.DownloadQueued, job, 1))
            assert (await w.line())["type"] == "queued"
        finally:
            await pub.close()
        # serve restarts on another port (its old one taken, say): the URL file changes.
        first.stop()
        second = embedded_nats.EmbeddedNats(data_dir, port=childprocess.free_port())
        await asyncio.to_thread(second.start)
        assert second.url != first.url
        pub = await _publisher(second.url, nats_prefix, second.token)
        try:
            await _send(pub, _progress(job, 2, 500))
            moved = await w.line()  # replayed from the stream once it subscribed again
            assert (moved["type"], moved["seq"]) == ("progress", 2)
            await _send(pub, _event(events.DownloadSucceeded, job, 3, attempt=1))
            assert (await w.line())["type"] == "succeeded"  # and live events follow
        finally:
            await pub.close()
        proc.send_signal(signal.SIGINT)
        code, _, err = await w.finish()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        first.stop()
        if second is not None:
            second.stop()
    assert code == 0, err
    lines = err.splitlines()
    assert "note: NATS disconnected; reconnecting" in lines, err
    assert f"note: NATS moved to {second.url}; reconnecting there" in lines, err
    assert f"note: NATS reconnected ({second.url})" in lines, err
