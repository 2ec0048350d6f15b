"""The NATS permissions example (deploy/nats/permissions.conf) on a real nats-server: each
role can do what llmctl does in that role, and nothing the others need.

The server runs the file as shipped, its passwords from the environment as the file says. The
allowed side runs llmctl's own clients (the controller's `Publisher` declaring the replay stream
and hearing the control subjects, the CLI's `trigger.publish`, `llmctl watch`'s replaying
`Watch`); the denied side is table-driven with plain clients, and a denial is the server's
"Permissions Violation" answer (it arrives before the answer to the flush that follows).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pathlib
import socket
import subprocess
from collections.abc import Iterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from controller import trigger
from dwqueue import events, flushing, jobs, publisher, subscriber
from tests import childprocess, services
from tests.e2e import serve_harness as h

CONF = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "nats" / "permissions.conf"
ROLES = ("controller", "watcher", "resolver", "gateway", "operator")
PASSWORDS = {role: f"{role}-test-password" for role in ROLES}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A nats-server running the example on a free loopback port; its port."""
    directory = tmp_path_factory.mktemp("nats-permissions")
    port = childprocess.free_port()
    environ = {**os.environ}
    environ.update({f"NATS_{role.upper()}_PASSWORD": PASSWORDS[role] for role in ROLES})
    argv = [str(services.find_nats_server()), "-c", str(CONF), "-a", "127.0.0.1"]
    argv += ["-p", str(port), "-sd", str(directory / "jetstream")]
    log = directory / "nats.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            argv, cwd=directory, env=environ, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        childprocess.wait_until(lambda: _greets(port), proc=proc, what="nats-server", log=log)
        yield port
    finally:
        childprocess.terminate(proc, services.NatsServer.STOP_SIGNAL)


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.makefile("rb").readline().startswith(b"INFO ")
    except OSError:
        return False


def _url(port: int, role: str) -> str:
    return f"nats://{role}:{PASSWORDS[role]}@127.0.0.1:{port}"


async def _connect(port: int, role: str, denied: list[str]) -> Client:
    async def remember(exc: Exception) -> None:
        denied.append(str(exc))

    return await nats.connect(_url(port, role), error_cb=remember, allow_reconnect=False)


def _event(job_id: str) -> events.DownloadEvent:
    at = dt.datetime.now(dt.UTC)
    return events.DownloadQueued(job_id=job_id, backend="gpu-1", model="llama3", seq=1, at=at)


async def test_each_role_does_what_llmctl_does_in_it(server: int) -> None:
    heard: list[tuple[str, bytes]] = []
    controller = publisher.Publisher(_url(server, "controller"), prefix="llmctl")
    await controller.start()
    try:
        await h.eventually(lambda: controller.jetstream is not None, 10, "the controller")
        assert controller.jetstream is True  # it declared the replay stream
        for name in (trigger.TRIGGER, trigger.CANCEL):

            async def on_message(body: bytes, name: str = name) -> None:
                heard.append((name, body))

            await controller.subscribe(trigger.subject("llmctl", name), on_message)
        await controller.flush(timeout_s=5)
        operator = _url(server, "operator")
        request = trigger.payload("ab" * 16)
        assert await trigger.publish(operator, trigger.subject("llmctl", trigger.TRIGGER), request)
        cancel = json.dumps({"job_id": "X"}).encode()
        assert await trigger.publish(operator, trigger.subject("llmctl", trigger.CANCEL), cancel)
        await h.eventually(lambda: len(heard) == 2, 10, "the operator's control requests")
        assert sorted(heard) == sorted([(trigger.TRIGGER, request), (trigger.CANCEL, cancel)])

        job_id = jobs.new_job_id(dt.datetime.now(dt.UTC))
        assert await controller.publish(_event(job_id), coalesce=False)
        await controller.flush(timeout_s=5)
        for role in ("watcher", "operator"):  # a late watcher still gets the latest event
            denied: list[str] = []
            nc = await _connect(server, role, denied)
            try:
                async with subscriber.Watch(nc, prefix="llmctl") as watch:
                    assert watch.replaying, f"{role}: no replay through JetStream"
                    seen = await watch.next(timeout_s=10)
            finally:
                await nc.close()
            assert (seen.job_id, denied) == (job_id, [])

        denied = []
        resolver = await _connect(server, "resolver", denied)
        try:
            states = await resolver.subscribe("llmctl.v1.state.*")  # as the resolver's mirror
            await flushing.flush(resolver, 5)
            assert await controller.publish_message("llmctl.v1.state.gpu-1", b'{"name":"gpu-1"}')
            assert (await states.next_msg(timeout=10)).data == b'{"name":"gpu-1"}'
            assert denied == []
        finally:
            await resolver.close()
    finally:
        await controller.close()


# (role, "pub" or "sub", subject, allowed)
CASES = [
    ("watcher", "pub", "llmctl.v1.control.trigger", False),
    ("watcher", "pub", "llmctl.v1.control.cancel", False),
    ("watcher", "pub", "llmctl.v1.downloads.gpu-1.X", False),  # no forged events
    ("watcher", "pub", "$JS.API.STREAM.DELETE.LLMCTL_DOWNLOADS", False),
    ("watcher", "sub", "llmctl.v1.control.cancel", False),
    ("watcher", "sub", "llmctl.v1.downloads.>", True),
    ("resolver", "pub", "llmctl.v1.control.trigger", False),
    ("resolver", "pub", "llmctl.v1.state.gpu-1", False),  # no forged states
    ("resolver", "sub", "llmctl.v1.downloads.>", False),
    ("resolver", "sub", "llmctl.v1.control.trigger", False),
    ("resolver", "sub", "llmctl.v1.state.*", True),
    ("resolver", "pub", "llmctl.v1.gateway.limits", False),
    ("gateway", "pub", "llmctl.v1.gateway.limits", True),
    ("gateway", "sub", "llmctl.v1.gateway.limits", True),
    ("gateway", "sub", "llmctl.v1.state.*", True),
    ("gateway", "pub", "llmctl.v1.state.gpu-1", False),
    ("gateway", "pub", "llmctl.v1.control.trigger", False),
    ("resolver", "pub", "llmctl.v1.outcomes.gpu-1", True),  # resolvers share outcomes
    ("resolver", "sub", "llmctl.v1.outcomes.*", True),
    ("watcher", "pub", "llmctl.v1.outcomes.gpu-1", False),
    ("gateway", "pub", "llmctl.v1.outcomes.gpu-1", True),  # a gateway is a resolver too
    ("gateway", "sub", "llmctl.v1.outcomes.*", True),
    ("operator", "pub", "llmctl.v1.state.gpu-1", False),
    ("operator", "pub", "llmctl.v1.cycles", False),
    ("operator", "pub", "$JS.API.STREAM.DELETE.LLMCTL_DOWNLOADS", False),
    ("operator", "sub", "llmctl.v1.control.cancel", False),
    ("operator", "pub", "llmctl.v1.control.cancel", True),
    ("controller", "pub", "llmctl.v1.control.trigger", False),
    ("controller", "pub", "llmctl.v1.control.cancel", False),
    ("controller", "pub", "$JS.API.STREAM.DELETE.LLMCTL_DOWNLOADS", False),
    ("controller", "sub", "llmctl.v1.downloads.>", False),
    ("controller", "pub", "llmctl.v1.cycles", True),
]


@pytest.mark.parametrize(("role", "action", "subject", "allowed"), CASES)
async def test_a_role_is_refused_what_it_does_not_need(
    server: int, role: str, action: str, subject: str, allowed: bool
) -> None:
    denied: list[str] = []
    nc = await _connect(server, role, denied)
    try:
        if action == "pub":
            await nc.publish(subject, b"{}")
        else:
            await nc.subscribe(subject)
        await flushing.flush(nc, 5)  # the server answered everything sent before
        await asyncio.sleep(0)  # let the error callback run
    finally:
        await nc.close()
    violations = [d for d in denied if "permissions violation" in d.lower()]
    assert bool(violations) is not allowed, denied
    if violations:
        assert f'"{subject.lower()}"' in violations[0]  # the client lower-cases it


def test_a_wrong_password_is_refused(server: int) -> None:
    async def connect() -> None:
        url = f"nats://watcher:wrong@127.0.0.1:{server}"
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)

    with pytest.raises((nats.errors.Error, OSError)):
        asyncio.run(connect())
