"""``llmctl demo``: the whole controller on one machine, with no configuration, in under a minute.

Starts two emulated Ollama nodes (pulling at about 200 MB/s, so pulls take seconds), one
emulated vLLM node, and a node agent (`llmctl node serve`, a real process with a declared GPU,
pulling weights from an emulated Hugging Face Hub and running the emulated vLLM server as its
``vllm serve``), a SQLite database in a temporary directory and the embedded NATS server,
runs `controller.composition.Controller` in-process, declares a small fleet, shows every pull as
a live progress bar fed by the download events on NATS, waits until every declared model is
served, prints ``llmctl backend list`` and how long converging took as soon as it has, then stops
cleanly (``--keep-running`` stays up until Ctrl-C).
Registered by the CLI root as ``llmctl demo``. Touches nothing outside its temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import tempfile
import time
from collections.abc import Callable
from typing import Annotated, Any

import nats
import nats.errors
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
)

from controller import composition, declare, demonode, logs, metrics, output, runner, settings
from dwqueue import events, natsauth
from emulators import ollama, vllm
from runtimestate import database
from runtimestate.desired import manifest

PULL_RATE = 200e6  # bytes/s per blob: a few seconds per model
OLLAMA_MODELS = ("qwen2:0.5b", "smollm2:135m", "all-minilm")
VLLM_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
TIMEOUT_S = 45.0


def fleet(ollama_urls: list[str], vllm_url: str, node_url: str | None = None) -> str:
    """The demo's declarative file: two Ollama backends, one vLLM backend, two pools; with
    ``node_url``, a node agent too, in a pool of its own with a model it runs under `vllm:`."""
    docs = [
        _backend(f"ollama-{chr(ord('a') + i)}", "ollama", url) for i, url in enumerate(ollama_urls)
    ]
    docs.append(_backend("vllm-a", "vllm", vllm_url))
    docs += [_model(name) for name in (*OLLAMA_MODELS, VLLM_MODEL)]
    edge = ", ".join(f"ollama-{chr(ord('a') + i)}" for i in range(len(ollama_urls)))
    docs.append(_pool("edge", edge, ", ".join(f'"{m}"' for m in OLLAMA_MODELS)))
    docs.append(_pool("gpu", "vllm-a", f'"{VLLM_MODEL}"'))
    if node_url is not None:
        token = f"credentials: {{env: {demonode.TOKEN_ENV}}}"
        docs.append(_backend("node-a", "node", node_url, token))
        docs.append(_model(demonode.MODEL, "spec: {vllm: {maxModelLen: 4096, gpus: 1}}\n"))
        docs.append(_pool("gpu-node", "node-a", f'"{demonode.MODEL}"'))
    return "---\n".join(docs)


def _backend(name: str, kind: str, url: str, extra: str = "") -> str:
    fields = f'type: {kind}, url: "{url}", maxPulls: 2' + (f", {extra}" if extra else "")
    return f"apiVersion: llmctl/v1\nkind: Backend\nmetadata: {{name: {name}}}\nspec: {{{fields}}}\n"


def _model(name: str, spec: str = "") -> str:
    return f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{name}"}}\n{spec}'


def _pool(name: str, backends: str, models: str) -> str:
    return (
        f"apiVersion: llmctl/v1\nkind: Pool\nmetadata: {{name: {name}}}\n"
        f"spec: {{backends: [{backends}], models: [{models}]}}\n"
    )


@dataclasses.dataclass
class Bars:
    """One progress bar per download job, driven by download events."""

    progress: Progress
    tasks: dict[str, TaskID] = dataclasses.field(default_factory=dict)
    finished: set[str] = dataclasses.field(default_factory=set)

    def show(self, event: events.DownloadEvent) -> None:
        label = f"{event.backend:<9} {event.model:<26}"
        task = self.tasks.get(event.job_id)
        if task is None:
            task = self.progress.add_task(label, total=None, rate="")
            self.tasks[event.job_id] = task
        if event.TYPE == "succeeded":
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total, description=f"{label} [green]done", rate="")
            self.finished.add(event.job_id)
        elif event.TERMINAL:
            self.progress.update(task, description=f"{label} [red]{event.TYPE}")
            self.finished.add(event.job_id)
        elif event.total:
            status = (event.status or event.TYPE)[:18]
            self.progress.update(
                task,
                total=event.total,
                completed=event.completed or 0,
                description=f"{label} {status}",
                rate=f"{event.rate_bps / 1e6:.0f} MB/s" if event.rate_bps else "",
            )


async def _follow(url: str, auth: natsauth.NatsAuth, prefix: str, bars: Bars) -> Any:
    client = await nats.connect(url, name="llmctl-demo", **auth.options(url))

    async def on_message(msg: Any) -> None:
        with contextlib.suppress(events.WireError):
            bars.show(events.from_wire(msg.data))

    await client.subscribe(events.downloads_root(prefix) + ".>", cb=on_message)
    return client


async def _apply(url: str, text: str) -> None:
    parsed = manifest.parse(text)
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await manifest.apply(session, parsed)
    finally:
        await engine.dispose()


async def _converged(controller: composition.Controller, timeout_s: float) -> bool:
    assert controller.state is not None
    assert controller.work is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        taken = controller.state.get()
        desired, ready = metrics.pairs(taken)
        pending = sum(len(b.downloads_pending) for b in taken.backends.values())
        if taken.backends and desired and desired == ready and not pending:
            return True
        if not controller.state.downloads.running:
            controller.work.request()  # a cycle sees finished pulls sooner than the schedule
        await asyncio.sleep(0.5)
    return False


Report = Callable[[bool], None]


async def _run(
    directory: pathlib.Path, console: Console, keep_running: bool, report: Report
) -> bool:
    """Run the demo; call ``report`` (in a worker thread: it reads the database on a loop of
    its own) as soon as the fleet converged or the time ran out, then stay up if told to."""
    url = f"sqlite:///{directory / 'llmctl.db'}"
    config = settings.Settings(
        database_url=url, nats_url=None, data_dir=directory, http_address="127.0.0.1:0",
        cycle_interval_s=2.0, download_interval_s=0.5, log_level="error", log_format="console",
        probe_grace_s=5.0,
    )  # fmt: skip
    async with (
        ollama.running(nodes=2, pull_rate=PULL_RATE) as edge,
        vllm.running(model=VLLM_MODEL) as gpu,
        _node(directory, console) as node_url,
        composition.Controller(config) as controller,
    ):
        assert controller.nats_url is not None
        assert controller.work is not None
        console.print(
            f"controller up: NATS {controller.nats_url}, "
            f"metrics http://127.0.0.1:{controller.http_port}/metrics, database {url}",
            highlight=False,
        )
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TextColumn("{task.fields[rate]}"), console=console, transient=False,
        )  # fmt: skip
        bars = Bars(progress)
        client = await _follow(
            controller.nats_url, controller.nats_auth, config.subject_prefix, bars
        )
        try:
            text = fleet([edge.node_url(0), edge.node_url(1)], gpu.url, node_url)
            await _apply(url, text)
            shape = (
                "4 backends, 5 models in 3 pools" if node_url else "3 backends, 4 models in 2 pools"
            )
            console.print(f"declared: {shape}; converging…")
            with progress:
                controller.work.request()
                ok = await _converged(controller, TIMEOUT_S)
            await asyncio.to_thread(report, ok)
            if ok and keep_running:
                waiting = asyncio.ensure_future(controller.wait())
                await asyncio.sleep(0)  # its Ctrl-C handler is in place before we say so
                console.print("running; Ctrl-C to stop", highlight=False)
                await waiting
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.close()
    return ok


def _node(
    directory: pathlib.Path, console: Console
) -> contextlib.AbstractAsyncContextManager[str | None]:
    """The demo's node agent, or None (said in one line) without the node extra installed."""
    if demonode.available():
        return demonode.running(directory, PULL_RATE)
    console.print(
        "node agent left out: its extra is not installed (pip install 'llmctl[node]')",
        highlight=False,
    )
    return contextlib.nullcontext(None)


def demo_command(
    ctx: typer.Context,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Stay up after converging, until Ctrl-C")
    ] = False,
) -> None:
    """Run a self-contained demo: emulated nodes, embedded NATS, pulls converging live."""
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    logs.configure("console", "error")  # warnings would tear the progress bars
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmctl-demo-") as tmp:
        directory = pathlib.Path(tmp)

        def report(ok: bool) -> None:
            """The converged fleet as ``llmctl backend list`` shows it, and how long it took."""
            elapsed = time.monotonic() - started
            ctx.find_root().obj = dataclasses.replace(
                env, database_url=f"sqlite:///{directory / 'llmctl.db'}"
            )
            env.out.print("\n$ llmctl backend list", highlight=False)
            declare.backend_list(ctx, output.Format.TABLE)
            ctx.find_root().obj = env
            if ok:
                env.out.print(f"\nconverged in {elapsed:.1f}s", highlight=False)

        try:
            ok = asyncio.run(_run(directory, env.out, keep_running, report))
        except demonode.AgentError as exc:
            env.fail(f"{exc} (run llmctl node serve by hand to see more)", 1)
    if not ok:
        env.fail(f"the fleet did not converge within {TIMEOUT_S:g}s", 1)
    env.out.print("everything stopped and cleaned up.", highlight=False)


__all__ = ["demo_command", "fleet"]
