"""``llmctl model upgrades``: the models a backend holds an older copy of than upstream has now.

Reads the persisted backend states and the stored upgrade checks (issue 19; the backend cycles
ask upstream, this command never does) and lists each available upgrade: MODEL, BACKEND, FROM
and TO (short digests in the table, whole in JSON and YAML) and SINCE (how long upstream has
had it). Registered on ``llmctl model`` by `controller.models`; it writes nothing and imports
the stores inside the command (tests/e2e/test_cli_imports.py).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import typer

from controller import declare, output, runner

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from runtimestate.reconcile import upgrades as upgrade_rules

_SHORT = 12
_COLUMNS = ("MODEL", "BACKEND", "FROM", "TO", "SINCE")


def model_upgrades(ctx: typer.Context, fmt: declare.OutputOpt = output.Format.TABLE) -> None:
    """List the upgrades available: models whose tag or revision moved upstream."""
    env = declare.env_of(ctx)
    found = runner.read(env, _read)
    docs = [_doc(u) for u in found]
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.render_one(docs, fmt, env.out)
        return
    if fmt is output.Format.NAME:
        output.render_names("model", docs, env.out, key="model")
        return
    now = dt.datetime.now(dt.UTC)
    rows = [
        [
            d["model"],
            d["backend"],
            d["from"][:_SHORT],
            d["to"][:_SHORT],
            output.age(d["since"], now),
        ]
        for d in docs
    ]
    output.write(env.out, output.table(_COLUMNS, rows))


async def _read(session: AsyncSession) -> list[upgrade_rules.Upgrade]:
    from runtimestate.reconcile import status, upgradechecks, upgrades

    states = await status.load_states(session)
    checks = await upgradechecks.load(session)
    known = {s: latest for s, c in checks.items() if (latest := c.known()) is not None}
    found = [u for state in states.values() for u in upgrades.available(state, known)]
    return sorted(found, key=lambda u: (u.model, u.backend))


def _doc(upgrade: upgrade_rules.Upgrade) -> dict[str, Any]:
    return {
        "model": upgrade.model,
        "backend": upgrade.backend,
        "from": upgrade.current,
        "to": upgrade.latest,
        "since": upgrade.since.isoformat(),
    }
