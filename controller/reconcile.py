"""``llmctl reconcile --once``: one backend cycle for system cron or a Kubernetes CronJob.

Builds a `State` on the configured database (publishing on NATS when a URL is given), runs one
backend cycle, prints the plan and what was done per backend; with ``--wait`` it then runs
download cycles until nothing is queued or running and one more backend cycle, and exits 0 only
when every backend converged (1 otherwise), so scripts can rely on the exit code.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Any

import typer

from controller import collector, output, runner
from dwqueue import publisher
from runtimestate import cycle, database, plan, snapshot, state

OutputOpt = Annotated[output.Format, typer.Option("--output", "-o", help="table or json")]


def _kind(action: plan.Action) -> str:
    return {
        plan.Pull: "pull",
        plan.CancelJob: "cancel",
        plan.Prune: "prune",
        plan.ReportDrift: "drift",
        plan.Hold: "hold",
    }[type(action)]


def _action_doc(action: plan.Action, outcome: cycle.Outcome | None) -> dict[str, Any]:
    model = getattr(action, "model", None)
    return {
        "kind": _kind(action),
        "model": model,
        "reason": action.reason.code.value,
        "text": action.describe(),
        "done": None if outcome is None else outcome.ok,
        "detail": None if outcome is None else outcome.detail or None,
    }


def converged(report: cycle.Report) -> bool:
    """Nothing left to do and every backend Ready with all its desired models served."""
    if report.plan.mutating:
        return False
    for backend in report.snapshot.backends.values():
        ready = backend.condition("ModelsReady")
        if backend.phase is not snapshot.Phase.READY or ready is None or not ready.status:
            return False
    return True


def report_doc(report: cycle.Report, is_converged: bool | None) -> dict[str, Any]:
    outcomes = {id(o.action): o for o in report.outcomes}
    backends = []
    for name, backend in sorted(report.snapshot.backends.items()):
        actions = report.plan.for_backend(name).actions
        backends.append(
            {
                "name": name,
                "phase": backend.phase.value,
                "error": backend.error,
                "actions": [_action_doc(a, outcomes.get(id(a))) for a in actions],
            }
        )
    return {
        "cycle": report.cycle,
        "dryRun": report.dry_run,
        "durationS": round(report.duration_s, 3),
        "converged": is_converged,
        "backends": backends,
    }


def _print(env: runner.Env, doc: dict[str, Any], fmt: output.Format) -> None:
    if fmt is not output.Format.TABLE:
        output.render_one(doc, fmt, env.out)
        return
    for backend in doc["backends"]:
        error = f"  ({backend['error']})" if backend["error"] else ""
        env.out.print(f"{backend['name']}: {backend['phase']}{error}", highlight=False)
        for action in backend["actions"]:
            done = {None: "", True: "  [done]", False: f"  [failed: {action['detail']}]"}
            env.out.print(f"  {action['text']}{done[action['done']]}", highlight=False)
        if not backend["actions"]:
            env.out.print("  nothing to do", highlight=False)
    if doc["converged"] is not None:
        env.out.print("converged" if doc["converged"] else "not converged", highlight=False)


async def _reconcile(
    env: runner.Env, dry_run: bool, wait: bool, wait_s: float
) -> tuple[cycle.Report, bool | None]:
    collector.tune()
    sink = None
    if env.nats_url:
        sink = publisher.Publisher(env.nats_url, prefix=env.prefix)
        await sink.start()
    engine = database.create_async_engine(env.database_url)
    settings = state.Settings(cycle=cycle.Settings(prefix=env.prefix))
    runtime = state.State(engine, sink=sink, settings=settings, environ=os.environ)
    try:
        report = await runtime.run_backend_cycle(dry_run=dry_run)
        if not wait or dry_run:
            return report, None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            await runtime.run_download_cycle()
            if not runtime.downloads.running and not await runtime.active_jobs():
                report = await runtime.run_backend_cycle()
                if not report.plan.mutating and not await runtime.active_jobs():
                    break
            await asyncio.sleep(0.5)
        return report, converged(report)
    finally:
        await runtime.aclose()
        await engine.dispose()
        if sink is not None:
            await sink.flush()
            await sink.close()


def reconcile_command(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Run one backend cycle and exit")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only plan; change nothing")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Then run downloads until converged")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait may take")] = 3600.0,
    fmt: OutputOpt = output.Format.TABLE,
) -> None:
    """Run one reconciliation pass: observe, plan, act. Exit 1 with --wait if not converged."""
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    if not once:
        env.fail("give --once (llmctl serve reconciles continuously)")
    if timeout <= 0:
        env.fail(f"--timeout must be positive, not {timeout}")
    report, is_converged = runner.run_async(env, lambda: _reconcile(env, dry_run, wait, timeout))
    _print(env, report_doc(report, is_converged), fmt)
    if is_converged is False:
        raise SystemExit(1)
