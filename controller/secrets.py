"""``llmctl secrets``: the secret key that encrypts stored API keys.

``llmctl secrets rotate [--dry-run]`` re-encrypts every stored API key under the current
``LLMCTL_SECRET_KEY``, opening each with it or with ``LLMCTL_SECRET_KEY_PREVIOUS``, in one
transaction (`runtimestate.desired.rotation`). It prints counts, never a key. Exit 2 with nothing
written when the current key is unset or weak, or when a stored key opens with neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from controller import runner

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(help="Manage the key that encrypts stored API keys.", no_args_is_help=True)


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check that every key opens; write nothing")
    ] = False,
) -> None:
    """Re-encrypt every stored API key under LLMCTL_SECRET_KEY (old one: ..._PREVIOUS)."""
    from runtimestate import credentials
    from runtimestate.desired import rotation

    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    try:  # before the database is opened: a bad key touches nothing
        credentials.require_secret_key(env.environ)
    except credentials.CredentialError as exc:
        env.fail(str(exc))

    async def work(session: AsyncSession) -> rotation.Rotation:
        return await rotation.rotate(session, env.environ, dry_run=dry_run)

    done = runner.transaction(env, work)
    verb = "would re-encrypt" if done.dry_run else "re-encrypted"
    previous = credentials.PREVIOUS_KEY_VARIABLE
    env.out.print(
        f"{verb} {done.keys} stored API key{'s' if done.keys != 1 else ''} under "
        f"{credentials.SECRET_KEY_VARIABLE} ({done.moved} from {previous} or the old format)"
        + ("; nothing written" if done.dry_run else ""),
        highlight=False,
    )
