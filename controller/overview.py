"""``llmctl status``: the fleet on one screen, read from the database in one transaction.

Registered on the root app by `controller.cli`. It shows the backends by phase (and names the
ones not Ready, never observed included), the models ready and desired summed over the backends
(as ``backend list`` counts them), the downloads running and queued (the queue) and failed and
held (what the backends' last observed states report as blocking), the last backend cycle (when
it started, how long it took, which process ran it) and the ``serve`` replicas whose heartbeat
is current (see `runtimestate.reconcile.replicas`). ``-o json|yaml`` prints the same figures
as one document. Exit codes: 0; 1 when the database cannot be used (one line); 2 for invalid
input, such as an embedded database that does not exist yet. It writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controller import output, runner, shapes
from runtimestate import snapshot

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from runtimestate.reconcile import replicas

NAMED = 10  # not-ready backends named on the screen; the rest are counted
ERROR_CHARS = 40  # as backend list cuts them

OutputOpt = Annotated[output.DocFormat, typer.Option("--output", "-o", help="table, json or yaml")]


def status_command(ctx: typer.Context, fmt: OutputOpt = output.DocFormat.TABLE) -> None:
    """Show the fleet at a glance: backends by phase, models, downloads, last cycle, replicas."""
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    backends, counts, found = runner.read(env, _read)
    doc = figures(backends, counts, found, dt.datetime.now(dt.UTC))
    if fmt is output.DocFormat.TABLE:
        for line in lines(doc, dt.datetime.now(dt.UTC)):
            env.out.out(line, highlight=False)
        return
    output.render_one(doc, output.Format(fmt), env.out)


async def _read(
    session: AsyncSession,
) -> tuple[list[dict[str, Any]], dict[str, int], list[replicas.Replica]]:
    """The backend documents, the active downloads by state and the replica record."""
    from dwqueue import jobs, queue
    from runtimestate.desired import store
    from runtimestate.reconcile import replicas, status

    state = await store.load(session)
    observed = await status.load_states(session)
    backends = [shapes.backend_doc(b, state, observed.get(b.name)) for b in state.backends]
    counts: dict[str, int] = {}
    for job in await queue.list_jobs(session, states=jobs.ACTIVE_STATES):
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    return backends, counts, await replicas.load(session)


def figures(
    backends: Sequence[dict[str, Any]],
    active: dict[str, int],
    found: Sequence[replicas.Replica],
    now: dt.datetime,
) -> dict[str, Any]:
    """The status document: pure, from the documents ``backend list -o json`` prints, the
    active downloads by state and the replica record."""
    from runtimestate.reconcile import replicas

    phases = {phase.value: 0 for phase in snapshot.Phase}
    not_ready = []
    ready = desired = failed = held = 0
    for doc in backends:
        status = doc["status"] or {"phase": snapshot.Phase.UNKNOWN.value, "error": None}
        phases[status["phase"]] += 1
        if status["phase"] != snapshot.Phase.READY.value:
            not_ready.append(
                {"name": doc["name"], "phase": status["phase"], "error": status["error"]}
            )
        if doc["status"] is not None:
            ready += status["ready"]
            desired += status["desired"]
            failed += len(status["downloads"]["failed"])
            held += len(status["downloads"]["held"])
    last = replicas.last_cycle(found)
    return {
        "backends": {"total": len(backends), "phases": phases, "notReady": not_ready},
        "models": {"ready": ready, "desired": desired},
        "downloads": {
            "running": active.get("running", 0),
            "queued": active.get("queued", 0),
            "failed": failed,
            "held": held,
        },
        "lastCycle": None if last is None else _cycle(last),
        "replicas": [_replica(r) for r in found if r.running(now)],
    }


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _cycle(replica: replicas.Replica) -> dict[str, Any]:
    assert replica.cycle_started_at is not None
    return {
        "cycle": replica.cycle,
        "startedAt": _time(replica.cycle_started_at),
        "durationS": None
        if replica.cycle_duration_s is None
        else round(replica.cycle_duration_s, 3),
        "by": replica.owner,
        "role": replica.role,
    }


def _replica(replica: replicas.Replica) -> dict[str, Any]:
    return {
        "owner": replica.owner,
        "startedAt": _time(replica.started_at),
        "heartbeatAt": _time(replica.heartbeat_at),
    }


def _not_ready(backend: dict[str, Any]) -> str:
    error = backend["error"]
    if error and len(error) > ERROR_CHARS:
        error = error[: ERROR_CHARS - 1] + "…"
    return f"{backend['name']} ({backend['phase']}{': ' + error if error else ''})"


def lines(doc: dict[str, Any], now: dt.datetime) -> list[str]:
    """The table form: one labelled line per figure."""
    backends, downloads = doc["backends"], doc["downloads"]
    phases = "   ".join(f"{name} {count}" for name, count in backends["phases"].items())
    not_ready = ", ".join(_not_ready(b) for b in backends["notReady"][:NAMED])
    if len(backends["notReady"]) > NAMED:
        not_ready += f" and {len(backends['notReady']) - NAMED} more (llmctl backend list)"
    last = doc["lastCycle"]
    cycle = "never (run llmctl serve or llmctl reconcile --once)"
    if last is not None:
        ago = output.age(last["startedAt"].replace("Z", "+00:00"), now)
        cycle = (
            f"#{last['cycle']} at {last['startedAt']} ({ago} ago), took "
            f"{last['durationS']:.2f}s, by {last['role']} {last['by']}"
        )
    running = doc["replicas"]
    names = ", ".join(
        f"{r['owner']} (up {output.age(r['startedAt'].replace('Z', '+00:00'), now)})"
        for r in running
    )
    return [
        f"BACKENDS    {backends['total']}   {phases}",
        f"NOT READY   {not_ready or '-'}",
        f"MODELS      {doc['models']['ready']}/{doc['models']['desired']} ready "
        "(summed over backends)",
        f"DOWNLOADS   {downloads['running']} running   {downloads['queued']} queued   "
        f"{downloads['failed']} failed   {downloads['held']} held",
        f"LAST CYCLE  {cycle}",
        f"REPLICAS    {len(running)} running{': ' + names if names else ''}",
    ]
