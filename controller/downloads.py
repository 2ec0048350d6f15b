"""The download commands: ``llmctl downloads list|get|cancel|retry``.

Registered on the root app by `controller.cli`; ``llmctl watch`` lives in `controller.watch`,
and how a download is shown (figures, document, table) in `controller.downloadview`. Each
command runs one transaction through `controller.runner` on the `dwqueue.queue` store. Cancel
and retry are durable once committed; only then, when a NATS URL is configured, they publish the
event the store returned and a request to the controller (``<prefix>.v1.control.cancel`` /
``.trigger``) so a running controller acts at once: a retry records the cycle request its
trigger names in its own transaction (`runtimestate.reconcile.cyclerequests`). Publishing is
best effort: a NATS failure is reported on stderr and never fails the command (the controller
reads the database on its next cycle anyway). Invalid input exits 2 and writes nothing. This
module must not write outside `dwqueue.queue` and the cycle requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controller import completion, downloadview, output, runner, selection
from dwqueue import jobs
from runtimestate import echo
from runtimestate.desired import names, spec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from controller import trigger
    from dwqueue import rows

app = typer.Typer(
    help="List, cancel and retry model downloads (pulls onto Ollama backends).",
    no_args_is_help=True,
)

OutputOpt = Annotated[
    output.Format, typer.Option("--output", "-o", help="table, wide, json, yaml or name")
]
STATE_CHOICES = [state.value for state in jobs.JobState] + ["active"]
_NATS_TIMEOUT_S = 3.0


def _env(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


def control_subject(prefix: str, verb: str) -> str:
    """``<prefix>.v1.control.<verb>``: requests to the controller (``cancel``, ``trigger``)."""
    from dwqueue import events

    return f"{events.check_prefix(prefix)}.v1.control.{verb}"


# --- input -------------------------------------------------------------------------------------


def _job_id(env: runner.Env, text: str) -> jobs.JobId:
    job_id = text.strip().upper()
    if not jobs.is_job_id(job_id):
        env.fail(
            f"{echo.quoted(text)} is not a download id (26 letters and digits, as shown by "
            "llmctl downloads list)"
        )
    return jobs.JobId(job_id)


def _states(env: runner.Env, given: list[str] | None) -> set[jobs.JobState] | None:
    if not given:
        return None
    states: set[jobs.JobState] = set()
    for value in given:
        if value == "active":
            states |= jobs.ACTIVE_STATES
        elif value in STATE_CHOICES:
            states.add(jobs.JobState(value))
        else:
            env.fail(f"--state: {echo.quoted(value)} is not one of {'|'.join(STATE_CHOICES)}")
    return states


def _not_found(job_id: str) -> runner.UsageError:
    return runner.UsageError(f"download {job_id} not found (see llmctl downloads list)")


# --- commands ----------------------------------------------------------------------------------


@app.command("list")
def list_downloads(
    ctx: typer.Context,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="Only this backend", autocompletion=completion.backends),
    ] = None,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help=f"{'|'.join(STATE_CHOICES)} (repeatable)"),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the newest N downloads")
    ] = None,
    fmt: OutputOpt = output.Format.TABLE,
    selector: selection.SelectorOpt = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", "-w", help="Keep the list on screen, redrawn as it changes (Ctrl-C to stop)"
        ),
    ] = False,
) -> None:
    """List downloads, oldest first (finished ones too, unless --state narrows them);
    -l keeps those of declared backends whose labels match."""
    from dwqueue import queue

    env = _env(ctx)
    states = _states(env, state)
    chosen = selection.selected(env, selector)

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        from runtimestate.desired import store

        backends = None
        if chosen:
            fleet = await store.load(session)
            backends = {b.name for b in fleet.backends if chosen.matches(b.spec.labels)}
        found = await queue.list_jobs(
            session,
            backend=backend,
            states=states,
            limit=limit,
            newest_first=True,
            backends=backends,
        )
        return [downloadview.job_doc(job) for job in found[::-1]]

    if watch:
        from controller import livelist

        # Download events, and the requests that queue or cancel them; a lease's renewal alone
        # (its expiry and the row's update time) is no change.
        subjects = ("v1.downloads.>", "v1.control.>")
        volatile = (("leaseExpiresAt",), ("updatedAt",))
        source = livelist.Source(work, downloadview.render_list, subjects, volatile)
        livelist.watch(env, source, fmt)
    downloadview.render_list(runner.read(env, work), fmt, env.out)


@app.command("get")
def get_download(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Download id", autocompletion=completion.downloads)],
    fmt: OutputOpt = output.Format.TABLE,
) -> None:
    """Show one download: state, attempts, last progress and error."""
    from dwqueue import queue

    env = _env(ctx)
    job_id = _job_id(env, job)

    async def work(session: AsyncSession) -> jobs.Job:
        found = await queue.get(session, job_id)
        if found is None:
            raise _not_found(job_id)
        return found

    doc = downloadview.job_doc(runner.read(env, work))
    output.render_got("download", doc, fmt, env.out, key="id")


@app.command("cancel")
def cancel_download(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="Download id", autocompletion=completion.downloads)
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="With --model", autocompletion=completion.backends),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Cancel this model's active download",
            autocompletion=completion.models,
        ),
    ] = None,
) -> None:
    """Cancel a queued or running download, durably: it is not queued again until retried or
    its declaration changes. Give its id, or --backend and --model."""
    env = _env(ctx)
    if job is not None and (backend is not None or model is not None):
        env.fail("give a download id or --backend with --model, not both")
    _check_prefix(env)
    if job is not None:
        job_id = _job_id(env, job)
        changes = runner.transaction(env, lambda s: _cancel_one(s, job_id))
    elif backend is not None and model is not None:
        key = _model_key(env, model)
        changes = runner.transaction(env, lambda s: _cancel_model(s, backend, model, key))
    else:
        env.fail("give a download id, or --backend and --model together")
    for change in changes:
        verb = "cancelled" if change.event else f"already {change.job.state.value}"
        env.out.print(f"download/{change.job.id} {verb}", highlight=False)
    _announce(env, changes, "cancel", lambda change: {"job_id": change.job.id})


async def _cancel_one(session: AsyncSession, job_id: str) -> list[rows.Change]:
    from dwqueue import queue

    change = await queue.cancel(session, job_id)
    if change is None:
        raise _not_found(job_id)
    return [change]


async def _cancel_model(
    session: AsyncSession, backend: str, model: str, key: names.ModelKey
) -> list[rows.Change]:
    from dwqueue import queue

    active = await queue.list_jobs(session, backend=backend, states=jobs.ACTIVE_STATES)
    ollama = spec.BackendType.OLLAMA
    found = [job for job in active if key in (job.model_key, names.key(job.model, ollama))]
    if not found:
        raise runner.UsageError(f"no queued or running download of {model} on backend {backend}")
    changes = [await queue.cancel(session, job.id) for job in found]
    return [change for change in changes if change is not None]


def _model_key(env: runner.Env, model: str) -> names.ModelKey:
    try:
        names.parse_ollama(model)
    except names.InvalidName as exc:
        env.fail(str(exc))
    return names.key(model, spec.BackendType.OLLAMA)


@app.command("retry")
def retry_download(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Download id", autocompletion=completion.downloads)],
) -> None:
    """Queue a failed or cancelled download again, due now, with its attempts reset (same id)."""
    import datetime as dt

    from controller import trigger
    from dwqueue import queue
    from runtimestate.reconcile import cyclerequests

    env = _env(ctx)
    job_id = _job_id(env, job)
    _check_prefix(env)
    announcing = trigger.target_url(env.nats_url) is not None
    request: list[str] = []  # the cycle request recorded with the retry, for the trigger

    async def work(session: AsyncSession) -> rows.Change:
        try:
            change = await queue.retry(session, job_id)
        except queue.QueueError as exc:  # a succeeded download: nothing to retry
            raise runner.UsageError(str(exc)) from exc
        if change is None:
            raise _not_found(job_id)
        if announcing and change.event is not None:
            request.append(await cyclerequests.record(session, dt.datetime.now(dt.UTC)))
        return change

    change = runner.transaction(env, work)
    if change.event is not None:
        env.out.print(f"download/{change.job.id} queued", highlight=False)
    elif change.job.id == job_id:
        env.out.print(f"download/{job_id} already {change.job.state.value}", highlight=False)
    else:
        env.out.print(
            f"download/{change.job.id} already {change.job.state.value} for "
            f"{change.job.model} on {change.job.backend}; {job_id} left as it is",
            highlight=False,
        )
    _announce(env, [change], "trigger", lambda _: {"request_id": request[0]})


# --- publishing after the commit ---------------------------------------------------------------


def _check_prefix(env: runner.Env) -> None:
    from dwqueue import events

    if env.nats_url is None:
        return
    try:
        events.check_prefix(env.prefix)
    except ValueError as exc:
        env.fail(f"--subject-prefix: {exc}")


def _announce(
    env: runner.Env,
    changes: Sequence[rows.Change],
    verb: str,
    payload: Callable[[rows.Change], dict[str, Any]],
) -> None:
    """Publish the events of ``changes`` and one control request per event; best effort."""
    from controller import trigger
    from dwqueue import natsauth

    found = trigger.target(env.nats_url, env.nats_auth)
    if found is None:
        return
    messages: list[tuple[str, bytes]] = []
    for change in changes:
        if change.event is None:
            continue
        messages.append((change.event.subject(env.prefix), change.event.to_wire()))
        body = json.dumps(payload(change), separators=(",", ":")).encode()
        messages.append((control_subject(env.prefix, verb), body))
    if not messages:
        return
    try:
        problem = asyncio.run(_publish(found, messages))
    except natsauth.NatsRefused as exc:
        if found.discovered_in is None:  # the configured credentials: the user must fix them
            env.fail(f"the change is saved, but {exc}", 1)
        problem = str(exc)
    if problem is not None:
        env.err.print(
            f"warning: the change is saved, but publishing it on NATS at {found.url} failed "
            f"({problem}); the controller sees it on its next cycle",
            highlight=False,
            markup=False,
        )


async def _publish(found: trigger.Target, messages: Sequence[tuple[str, bytes]]) -> str | None:
    """Send ``messages`` and wait for the server to have them; the failure, or None. Raises
    `natsauth.NatsRefused` when the server refuses the credentials or TLS."""
    import nats.errors

    from dwqueue import connector, flushing, natsauth

    nc = connector.GuardedClient()
    try:
        await connector.dial(
            nc,
            found.url,
            found.auth,
            timeout_s=_NATS_TIMEOUT_S * 2,
            name="llmctl-cli",
            allow_reconnect=False,
            max_reconnect_attempts=1,  # two quick tries, then give up
            reconnect_time_wait=0.2,
            connect_timeout=2,
        )
        for subject, data in messages:
            await nc.publish(subject, data)
        await flushing.flush(nc, _NATS_TIMEOUT_S)
    except natsauth.NatsUnreachable as exc:
        cause = exc.__cause__ or exc
        return str(cause) or type(cause).__name__
    except natsauth.NatsRefused:
        raise  # a ConnectionError, so an OSError: the caller tells the user what to fix
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        await nc.close()
    return None
