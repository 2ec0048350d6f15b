"""``llmctl model upgrades`` and ``llmctl model upgrade NAME [--backend B]`` (issue 19).

``upgrades`` reads the persisted backend states and the stored upgrade checks (the backend
cycles ask upstream, these commands never do) and lists each available upgrade: MODEL, BACKEND,
FROM and TO (short digests in the table, whole in JSON and YAML), SINCE (how long upstream has
had it) and POLICY (the model's updatePolicy); it writes nothing. ``upgrade`` asks for the
upgrade of a model (a ``manual`` one, typically) on every backend holding an old copy, or on
one: it records the request (`runtimestate.reconcile.upgraderequests`), so any replica's next
cycle rolls it as it rolls an ``auto`` model (maxUnavailable, never the last ready copy), and
asks a running controller for a cycle over NATS; nothing is recorded when no upgrade is known.
Registered on ``llmctl model`` by `controller.models`; the stores are imported inside the
commands (tests/e2e/test_cli_imports.py).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controller import declare, output, runner

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from runtimestate import desired
    from runtimestate.reconcile import upgrades as upgrade_rules

_SHORT = 12
_COLUMNS = ("MODEL", "BACKEND", "FROM", "TO", "SINCE", "POLICY")
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="Only this backend (default: every one)")
]


def model_upgrades(ctx: typer.Context, fmt: declare.OutputOpt = output.Format.TABLE) -> None:
    """List the upgrades available: models whose tag or revision moved upstream."""
    env = declare.env_of(ctx)
    docs = runner.read(env, _read)
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.render_one(docs, fmt, env.out)
        return
    if fmt is output.Format.NAME:
        output.render_names("model", docs, env.out, key="model")
        return
    now = dt.datetime.now(dt.UTC)
    rows = [
        [d["model"], d["backend"], d["from"][:_SHORT], d["to"][:_SHORT],
         output.age(d["since"], now), output.cell(d["policy"])]
        for d in docs
    ]  # fmt: skip
    output.write(env.out, output.table(_COLUMNS, rows))


def model_upgrade(ctx: typer.Context, name: declare.ModelArg, backend: BackendOpt = None) -> None:
    """Upgrade a model onto what upstream has now (one backend at a time, as auto ones are)."""
    env = declare.env_of(ctx)
    found = runner.transaction(env, lambda session: _request(session, name, backend))
    if not found:
        where = f" on {backend}" if backend else ""
        env.out.print(f"model/{name}: no upgrade available{where}", highlight=False)
        return
    env.out.print(f"model/{name} upgrade requested on {', '.join(found)}", highlight=False)
    runner.notify(env)


async def _request(session: AsyncSession, name: str, backend: str | None) -> list[str]:
    """Record the request when an upgrade is known; the backends it covers. Raises the
    store's NotFound for a model or backend not declared."""
    from runtimestate.desired import names, refusals, spec, store
    from runtimestate.reconcile import upgraderequests

    state = await store.load(session)
    model = state.model(name)
    if model is None:
        raise refusals.missing("model", name, (m.name for m in state.models))
    if backend is not None and state.backend(backend) is None:
        raise refusals.missing("backend", backend, (b.name for b in state.backends))
    key = names.key(model.spec.name, spec.BackendType.OLLAMA)
    found = [
        u.backend
        for u in await _available(session)
        if names.key(u.model, spec.BackendType.OLLAMA) == key and backend in (None, u.backend)
    ]
    if found:
        now = dt.datetime.now(dt.UTC)
        await upgraderequests.record(session, str(key), backend or "", now)
    return found


async def _read(session: AsyncSession) -> list[dict[str, Any]]:
    from runtimestate.desired import store

    state = await store.load(session)
    return [_doc(u, state) for u in await _available(session)]


async def _available(session: AsyncSession) -> list[upgrade_rules.Upgrade]:
    """Every available upgrade, by model then backend."""
    from runtimestate.reconcile import status, upgradechecks, upgrades

    states = await status.load_states(session)
    checks = await upgradechecks.load(session)
    known = {s: latest for s, c in checks.items() if (latest := c.known()) is not None}
    found = [u for state in states.values() for u in upgrades.available(state, known)]
    return sorted(found, key=lambda u: (u.model, u.backend))


def _doc(upgrade: upgrade_rules.Upgrade, state: desired.DesiredState) -> dict[str, Any]:
    declared = state.model(upgrade.model)
    return {
        "model": upgrade.model,
        "backend": upgrade.backend,
        "from": upgrade.current,
        "to": upgrade.latest,
        "since": upgrade.since.isoformat(),
        "policy": None if declared is None else declared.spec.update.policy.value,
    }
