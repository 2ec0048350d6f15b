"""The node agent's instance supervisor, with the emulated vLLM server as real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import pathlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from nodeagent import command, gpus, instance, instances, record, restarts
from tests.integration import node_instances_fixtures as fx

Make = Callable[..., instances.Supervisor]


@pytest.fixture
async def make(tmp_path: pathlib.Path) -> AsyncIterator[Make]:
    """Builds supervisors over `tmp_path/state`; each is closed (every instance stopped) after."""
    made: list[instances.Supervisor] = []

    def build(
        settings: instances.Settings | None = None, declared: str = "2x80GiB"
    ) -> instances.Supervisor:
        inventory = gpus.Inventory(gpus.parse(declared))
        supervisor = instances.Supervisor(tmp_path / "state", inventory, settings or fx.settings())
        made.append(supervisor)
        return supervisor

    yield build
    for supervisor in made:
        await supervisor.close()


def _spec(name: str = "chat", **engine: Any) -> command.ModelSpec:
    return command.ModelSpec(name, f"/weights/{name}", command.EngineArgs(**engine))


async def test_an_instance_is_starting_then_ready_with_its_arguments_gpus_and_record(
    make: Make, tmp_path: pathlib.Path
) -> None:
    supervisor = make()
    started = await supervisor.start(_spec(max_model_len=4096))
    assert started.state is instance.State.STARTING
    status = await fx.ready(supervisor, "chat")
    assert status.base_url == f"http://127.0.0.1:{status.port}/v1"
    async with httpx.AsyncClient() as client:
        cards = (await client.get(f"{status.base_url}/models")).json()["data"]
    assert [(c["id"], c["root"], c["max_model_len"]) for c in cards] == [
        ("chat", "/weights/chat", 4096)
    ]
    assert status.pid is not None
    assert fx.environment_of(status.pid)["CUDA_VISIBLE_DEVICES"] == "0"
    assert status.argv[-2:] == ("--max-model-len", "4096")
    [entry] = record.load(tmp_path / "state")
    assert (entry.name, entry.pid, entry.pgid, entry.port, entry.gpus) == (
        "chat",
        status.pid,
        status.pid,
        status.port,
        (0,),
    )
    assert entry.argv == status.argv


async def test_a_sigkilled_instance_is_restarted_and_ready_again(make: Make) -> None:
    supervisor = make()
    await supervisor.start(_spec())
    first = await fx.ready(supervisor, "chat")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    await fx.eventually(lambda: supervisor.list()[0].restarts == 1, "a restart")
    again = await fx.ready(supervisor, "chat")
    assert again.pid != first.pid
    assert again.port == first.port
    assert again.last_error is not None
    assert "killed by signal 9" in again.last_error


def _restarted(supervisor: instances.Supervisor, times: int) -> bool:
    return supervisor.list()[0].restarts == times


async def test_a_sigkilled_instance_waits_a_longer_backoff_after_each_crash(
    tmp_path: pathlib.Path,
) -> None:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        await asyncio.sleep(seconds)

    policy = restarts.Policy(initial=0.07, factor=3.0, maximum=5.0, crash_loop_after=9)
    settings = dataclasses.replace(fx.settings(), policy=policy)
    probes = {settings.probe_interval, settings.startup_probe_interval}
    inventory = gpus.Inventory(gpus.parse("1x24GiB"))
    supervisor = instances.Supervisor(tmp_path / "state", inventory, settings, sleep=sleep)
    try:
        await supervisor.start(_spec())
        pids = [(await fx.ready(supervisor, "chat")).pid]
        for crash in (1, 2):
            os.kill(pids[-1] or 0, signal.SIGKILL)
            await fx.eventually(functools.partial(_restarted, supervisor, crash), "a restart")
            pids.append((await fx.ready(supervisor, "chat")).pid)
        backoffs = [s for s in waited if s not in probes]
    finally:
        await supervisor.close()

    assert len(set(pids)) == 3
    assert backoffs == pytest.approx([0.07, 0.21])


async def test_a_command_that_exits_at_once_is_crash_loop_back_off_with_its_log_tail(
    make: Make,
) -> None:
    template = ("sh", "-c", 'echo "no weights at $0" >&2; exit 3', "{path}", "{port}")
    supervisor = make(fx.settings(template))
    await supervisor.start(_spec())
    await fx.eventually(
        lambda: supervisor.list()[0].state is instance.State.CRASH_LOOP_BACK_OFF,
        "CrashLoopBackOff",
    )
    status = supervisor.list()[0]
    assert status.restarts >= 3
    assert status.last_error is not None
    assert "exited with code 3" in status.last_error
    assert status.log_tail is not None
    assert "no weights at /weights/chat" in status.log_tail


async def test_a_crash_looping_instance_is_ready_again_once_its_command_works(
    make: Make, tmp_path: pathlib.Path
) -> None:
    fixed = tmp_path / "fixed"
    script = f'test -f {fixed} || {{ echo "weights missing"; exit 1; }}'
    supervisor = make(fx.settings(fx.shell(script)))
    await supervisor.start(_spec())
    await fx.eventually(
        lambda: supervisor.list()[0].state is instance.State.CRASH_LOOP_BACK_OFF,
        "CrashLoopBackOff",
    )
    fixed.touch()
    status = await fx.ready(supervisor, "chat")
    assert status.restarts >= 3


async def test_stop_kills_the_whole_process_group_and_frees_the_port_and_gpus(
    make: Make, tmp_path: pathlib.Path
) -> None:
    child_file = tmp_path / "child.pid"
    supervisor = make(fx.settings(fx.shell(f"sleep 300 & echo $! > {child_file}")))
    await supervisor.start(_spec())
    status = await fx.ready(supervisor, "chat")
    child = int(child_file.read_text())
    assert fx.alive(child)
    assert fx.accepts(status.port)
    try:
        assert await supervisor.stop("chat") is True
        assert not fx.alive(child)
        assert not fx.accepts(status.port)
        assert supervisor.list() == []
        assert supervisor.inventory.holders() == {}
        assert record.load(tmp_path / "state") == []
        assert await supervisor.stop("chat") is False
    finally:
        fx.kill_if_alive(child)


async def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period(
    make: Make, tmp_path: pathlib.Path
) -> None:
    child_file = tmp_path / "child.pid"
    script = f"trap '' TERM\nsleep 300 & echo $! > {child_file}"
    supervisor = make(fx.settings(fx.shell(script), grace=0.3))
    await supervisor.start(_spec())
    await fx.ready(supervisor, "chat")
    child = int(child_file.read_text())
    try:
        await supervisor.stop("chat")
        assert not fx.alive(child)
    finally:
        fx.kill_if_alive(child)


async def test_two_models_needing_one_gpu_on_a_one_gpu_node_wait_for_the_gpu(
    make: Make,
) -> None:
    supervisor = make(declared="1x24GiB")
    await supervisor.start(_spec("first"))
    with pytest.raises(gpus.Unplaceable, match=r"^needs 1 GPU, 0 free$"):
        await supervisor.start(_spec("second"))
    assert [s.name for s in supervisor.list()] == ["first"]
    await supervisor.stop("first")
    await supervisor.start(_spec("second"))
    status = await fx.ready(supervisor, "second")
    assert status.gpus == (0,)
    assert status.pid is not None
    assert fx.environment_of(status.pid)["CUDA_VISIBLE_DEVICES"] == "0"


async def test_starting_the_same_spec_twice_is_one_instance_and_another_spec_is_refused(
    make: Make,
) -> None:
    supervisor = make()
    first = await supervisor.start(_spec())
    again = await supervisor.start(_spec())
    assert (again.pid, again.port) == (first.pid, first.port)
    with pytest.raises(instances.InstanceExists, match="stop it first"):
        await supervisor.start(_spec(max_model_len=1024))
    assert len(supervisor.list()) == 1


async def test_a_command_that_cannot_be_run_is_refused_and_holds_no_gpu(make: Make) -> None:
    supervisor = make(fx.settings(("/nonexistent/vllm", "serve", "{path}", "--port", "{port}")))
    with pytest.raises(
        instances.StartError, match=r"cannot run '/nonexistent/vllm'.*llmctl\[node-vllm\]"
    ):
        await supervisor.start(_spec())
    assert supervisor.list() == []
    assert supervisor.inventory.holders() == {}


async def test_close_stops_every_instance_and_leaves_an_empty_record(
    make: Make, tmp_path: pathlib.Path
) -> None:
    supervisor = make()
    await supervisor.start(_spec("a"))
    await supervisor.start(_spec("b"))
    pids = [(await fx.ready(supervisor, name)).pid for name in ("a", "b")]
    await supervisor.close()
    assert not any(fx.alive(pid) for pid in pids if pid is not None)
    assert supervisor.list() == []
    assert json.loads((tmp_path / "state" / "instances.json").read_text())["instances"] == []


async def test_an_instance_whose_server_lists_another_name_stays_starting(make: Make) -> None:
    template = tuple("other" if token == "{name}" else token for token in fx.EMULATOR)
    supervisor = make(fx.settings(template))
    status = await supervisor.start(_spec())
    admin = f"http://127.0.0.1:{status.port}/_emulator/state"
    async with httpx.AsyncClient() as client:

        async def asked_three_times() -> bool:
            try:
                state = (await client.get(admin)).json()
            except httpx.TransportError:
                return False
            return int(state["nodes"][0]["requests"].get("GET /v1/models", 0)) >= 3

        await fx.eventually_async(asked_three_times, "three probes of /v1/models")
    assert supervisor.list()[0].state is instance.State.STARTING


async def test_a_ready_instance_whose_health_fails_is_starting_until_healthy_again(
    make: Make,
) -> None:
    supervisor = make()
    await supervisor.start(_spec())
    status = await fx.ready(supervisor, "chat")
    admin = f"http://127.0.0.1:{status.port}/_emulator/state"
    async with httpx.AsyncClient() as client:
        await client.post(admin, json={"healthy": False})
        await fx.eventually(
            lambda: supervisor.list()[0].state is instance.State.STARTING, "starting"
        )
        assert supervisor.list()[0].last_error == "/health answered 503"
        await client.post(admin, json={"healthy": True})
    again = await fx.ready(supervisor, "chat")
    assert (again.pid, again.restarts) == (status.pid, 0)


async def test_opening_twice_keeps_the_instances_already_running(make: Make) -> None:
    supervisor = make()
    await supervisor.open()
    await supervisor.start(_spec())
    status = await fx.ready(supervisor, "chat")
    assert await supervisor.open() == {}
    assert supervisor.list()[0].pid == status.pid
    assert status.pid is not None
    assert fx.alive(status.pid)


async def test_a_log_over_its_limit_is_rotated_when_the_instance_restarts(
    make: Make, tmp_path: pathlib.Path
) -> None:
    script = 'echo "run $$ $(head -c 300 /dev/zero | tr "\\0" x)"; exit 1'
    supervisor = make(fx.settings(("sh", "-c", script, "{port}"), log_limit=200))
    await supervisor.start(_spec())
    await fx.eventually(lambda: supervisor.list()[0].restarts >= 2, "two restarts")
    [log] = (tmp_path / "state" / "logs").glob("*.log")
    rotated = log.with_name(log.name + ".1")
    await fx.eventually(rotated.exists, "a rotated log")
    assert rotated.read_text().count("\nrun ") == 1
    assert log.stat().st_size < 1000


async def test_an_instance_with_an_api_key_is_ready_and_its_key_is_never_shown(
    make: Make, tmp_path: pathlib.Path
) -> None:
    supervisor = make()
    await supervisor.start(_spec(extra_args=("--api-key", "sekret-key")))
    status = await fx.ready(supervisor, "chat")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{status.base_url}/models")).status_code == 401
    assert status.argv[-2:] == ("--api-key", "***")
    assert "sekret-key" not in repr(supervisor.list())
    [log] = (tmp_path / "state" / "logs").glob("*.log")
    assert "--api-key ***" in log.read_text()
    assert "sekret-key" not in log.read_text()
    assert (tmp_path / "state" / "instances.json").stat().st_mode & 0o077 == 0


async def test_the_log_tail_of_a_crashed_instance_masks_its_api_key(make: Make) -> None:
    template = ("sh", "-c", 'echo "non-default args: $*"; exit 1', "sh", "{port}")
    supervisor = make(fx.settings(template))
    await supervisor.start(_spec(extra_args=("--api-key", "sekret-key")))
    await fx.eventually(lambda: supervisor.list()[0].log_tail is not None, "a crash")
    tail = supervisor.list()[0].log_tail
    assert tail is not None
    assert "non-default args:" in tail
    assert "--api-key ***" in tail
    assert "sekret-key" not in tail


async def test_an_instance_bound_to_every_interface_answers_on_another_address_and_advertises(
    make: Make,
) -> None:
    address = fx.other_address()
    supervisor = make(fx.settings(host="0.0.0.0", advertise_host="gpu-7.example.test"))
    await supervisor.start(_spec())
    status = await fx.ready(supervisor, "chat")  # probed on loopback
    async with httpx.AsyncClient() as client:
        cards = (await client.get(f"http://{address}:{status.port}/v1/models")).json()["data"]

    assert [card["id"] for card in cards] == ["chat"]
    assert status.base_url == f"http://gpu-7.example.test:{status.port}/v1"
    assert status.host == "0.0.0.0"
    assert status.argv[status.argv.index("--host") + 1] == "0.0.0.0"


async def test_an_instance_on_the_default_host_answers_on_loopback_only(make: Make) -> None:
    supervisor = make()
    await supervisor.start(_spec())
    status = await fx.ready(supervisor, "chat")

    assert fx.accepts(status.port)
    assert not fx.answers(fx.other_address(), status.port)
    assert status.base_url == f"http://127.0.0.1:{status.port}/v1"
