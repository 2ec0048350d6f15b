"""``llmctl reconcile --once``: one backend cycle for system cron or a Kubernetes CronJob.

Builds a `State` on the configured database (publishing on NATS when a URL is given) with the
settings ``serve`` uses (``LLMCTL_*`` variables and ``--config``: observe concurrency, cycle
deadline, timeouts, probe grace, download concurrency), runs one backend cycle, prints the plan
and what was done per backend (backends no longer declared included: their downloads are
cancelled); with ``--wait`` it then runs download cycles until nothing is queued or running and
one more backend cycle (more while a node agent's instance is still starting), and exits 0 only
when every backend converged, 1 when not or when the wait timed out, so scripts can rely on the
exit code. Conflicting or invalid options exit 2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import Annotated, Any

import typer

from controller import gctuning, logs, output, runner, selection, serve, settings
from dwqueue import connector, natsauth, publisher
from runtimestate import database, errors, snapshot, state
from runtimestate.desired import selectors
from runtimestate.reconcile import cycle, execution, steps

OutputOpt = Annotated[output.DocFormat, typer.Option("--output", "-o", help="table, json or yaml")]
DEFAULT_WAIT_S = 3600.0


@dataclasses.dataclass(frozen=True)
class Waited:
    """How ``--wait`` ended: converged or not, and whether it ran out of time."""

    converged: bool
    timed_out: bool
    timeout_s: float


def _kind(action: steps.Action) -> str:
    return {
        steps.Pull: "pull",
        steps.CancelJob: "cancel",
        steps.Prune: "prune",
        steps.ReportDrift: "drift",
        steps.Hold: "hold",
        steps.StartInstance: "start",
        steps.RestartInstance: "restart",
        steps.StopInstance: "stop",
        steps.Preload: "preload",
        steps.Unload: "unload",
        steps.LoadAdapter: "load-adapter",  # LoRA adapters (issue 16)
        steps.UnloadAdapter: "unload-adapter",
    }[type(action)]


def _action_doc(action: steps.Action, outcome: execution.Outcome | None) -> dict[str, Any]:
    model = getattr(action, "model", None)
    return {
        "kind": _kind(action),
        "model": model,
        "reason": action.reason.code.value,
        "text": action.describe(),
        "done": None if outcome is None else outcome.ok,
        "detail": None if outcome is None else outcome.detail or None,
    }


_SETTLING = frozenset({"starting", "stopping"})


def converged(report: cycle.Report) -> bool:
    """Nothing left to do and every backend Ready with all its desired models served and,
    where adapters are placed, all of them loaded."""
    if report.plan.mutating:
        return False
    for backend in report.snapshot.backends.values():
        ready = backend.condition("ModelsReady")
        if backend.phase is not snapshot.Phase.READY or ready is None or not ready.status:
            return False
        adapters = backend.condition("AdaptersReady")
        if adapters is not None and not adapters.status:
            return False
    return True


def report_doc(report: cycle.Report, waited: Waited | None) -> dict[str, Any]:
    """The report as JSON-ready data: per backend its phase and actions, backends that are no
    longer declared (``declared: false``, phase null) included when the plan acted on them;
    with a selector, the selector and how many backends it selected."""
    outcomes = {id(o.action): o for o in report.outcomes}
    declared = report.snapshot.backends
    names = set(declared) | {a.backend for a in report.plan.actions}
    backends = []
    for name in sorted(names):
        backend = declared.get(name)
        actions = report.plan.for_backend(name).actions
        backends.append(
            {
                "name": name,
                "declared": backend is not None,
                "phase": backend.phase.value if backend is not None else None,
                "error": backend.error if backend is not None else None,
                "actions": [_action_doc(a, outcomes.get(id(a))) for a in actions],
            }
        )
    selected = {}
    if report.selector:
        selected = {"selector": str(report.selector), "selected": len(declared)}
    return {
        "cycle": report.cycle,
        **selected,
        "dryRun": report.dry_run,
        "durationS": round(report.duration_s, 3),
        "converged": waited.converged if waited is not None else None,
        "timedOut": waited.timed_out if waited is not None else None,
        "waitTimeoutS": waited.timeout_s if waited is not None else None,
        "backends": backends,
    }


def _print(env: runner.Env, doc: dict[str, Any], fmt: output.Format) -> None:
    if fmt is not output.Format.TABLE:
        output.render_one(doc, fmt, env.out)
        return
    if "selector" in doc:
        count = doc["selected"]
        chosen = "no backend matches; nothing to do" if not count else (
            f"{count} backend{'s' if count != 1 else ''} selected"
        )  # fmt: skip
        env.out.print(f"selector {doc['selector']}: {chosen}", highlight=False)
    for backend in doc["backends"]:
        error = f"  ({backend['error']})" if backend["error"] else ""
        phase = backend["phase"] if backend["declared"] else "no longer declared"
        env.out.print(f"{backend['name']}: {phase}{error}", highlight=False)
        for action in backend["actions"]:
            done = {None: "", True: "  [done]", False: f"  [failed: {action['detail']}]"}
            env.out.print(f"  {action['text']}{done[action['done']]}", highlight=False)
        if not backend["actions"]:
            env.out.print("  nothing to do", highlight=False)
    if doc["timedOut"]:
        env.out.print(
            f"timed out after {doc['waitTimeoutS']:g} s waiting for downloads; not converged",
            highlight=False,
        )
    elif doc["converged"] is not None:
        env.out.print("converged" if doc["converged"] else "not converged", highlight=False)


def _instances_settling(report: cycle.Report) -> bool:
    """Whether a node agent's instance is still starting or stopping: worth waiting for."""
    return any(
        instance.state in _SETTLING
        for backend in report.snapshot.backends.values()
        for instance in backend.instances
    )


async def _reconcile(
    env: runner.Env,
    runtime_settings: state.Settings,
    dry_run: bool,
    wait_s: float | None,
    selector: selectors.Selector = selectors.EVERYTHING,
) -> tuple[cycle.Report, Waited | None]:
    gctuning.tune()
    sink = None
    if env.nats_url:
        sink = publisher.Publisher(env.nats_url, prefix=env.prefix, auth=env.nats_auth)
        await sink.start()
    engine = database.create_async_engine(env.database_url)
    runtime = state.State(engine, sink=sink, settings=runtime_settings, environ=env.environ)
    try:
        report = await runtime.run_backend_cycle(dry_run=dry_run, selector=selector)
        if wait_s is None:
            return report, None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            await runtime.run_download_cycle()
            if not runtime.downloads.running and not await runtime.active_jobs():
                report = await runtime.run_backend_cycle()
                settled = not report.plan.mutating and not await runtime.active_jobs()
                if settled and (converged(report) or not _instances_settling(report)):
                    return report, Waited(converged(report), False, wait_s)
            await asyncio.sleep(0.5)
        return report, Waited(False, True, wait_s)
    finally:
        await runtime.aclose()
        await engine.dispose()
        if sink is not None:
            await sink.flush()
            await sink.close()


def _wait_seconds(
    env: runner.Env, dry_run: bool, wait: bool, timeout: float | None
) -> float | None:
    """How long ``--wait`` may take (None: no wait); exits 2 on a conflicting or bad option."""
    if dry_run and wait:
        env.fail("--dry-run and --wait cannot be combined: a dry run changes nothing to wait for")
    if timeout is not None and not wait:
        env.fail("--timeout limits --wait; give --wait too, or drop --timeout")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        env.fail(f"--timeout must be a positive number of seconds, not {timeout}")
    if not wait:
        return None
    return DEFAULT_WAIT_S if timeout is None else timeout


def _nats_auth(env: runner.Env, loaded: settings.Settings) -> natsauth.NatsAuth:
    """The settings' NATS credentials, once the server accepted them: exit 1 with the reason
    when it refuses them (an unreachable server only loses the events, as in ``serve``)."""
    if loaded.nats_url is None:
        return natsauth.NatsAuth()
    try:
        auth = loaded.nats_auth()
        asyncio.run(connector.probe(loaded.nats_url, auth))
    except natsauth.NatsRefused as exc:
        env.fail(str(exc), 1)
    except natsauth.NatsUnreachable:
        pass
    return auth


def reconcile_command(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Run one backend cycle and exit")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only plan; change nothing")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Then run downloads until converged")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help=f"Seconds --wait may take (default {DEFAULT_WAIT_S:g})",
            show_default=False,
        ),
    ] = None,
    config: serve.ConfigOpt = None,
    fmt: OutputOpt = output.DocFormat.TABLE,
    selector: selection.SelectorOpt = None,
) -> None:
    """Run one reconciliation pass: observe, plan, act. Exit 1 with --wait if not converged."""
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    if not once:
        env.fail("give --once (llmctl serve reconciles continuously)")
    wait_s = _wait_seconds(env, dry_run, wait, timeout)
    chosen = selection.selected(env, selector)
    if chosen and wait:
        env.fail(
            "-l/--selector and --wait cannot be combined: downloads run for every backend; "
            "run reconcile --once -l SELECTOR, then follow them with llmctl downloads list -l"
        )
    try:
        loaded = settings.load(config, **serve.root_overrides(ctx))
        runtime_settings = loaded.state_settings()  # reads the hub token file: a bad one fails here
    except errors.ConfigurationError as exc:
        env.fail(str(exc))
    # Its log lines (the canonical ``backend_cycle``) in the format ``serve`` would write.
    logs.configure(loaded.resolved_log_format, loaded.log_level)
    # Where `serve` would run: command line, then environment, then the file, then default.
    env = dataclasses.replace(
        env,
        database_url=loaded.database_url or env.database_url,
        nats_url=loaded.nats_url,
        prefix=loaded.subject_prefix,
        nats_auth=_nats_auth(env, loaded),
    )
    report, waited = runner.run_async(
        env, lambda: _reconcile(env, runtime_settings, dry_run, wait_s, chosen)
    )
    _print(env, report_doc(report, waited), output.Format(fmt))
    if waited is not None and not waited.converged:
        raise SystemExit(1)
