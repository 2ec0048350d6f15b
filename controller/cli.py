"""The ``llmctl`` command line: the global options and the table of commands.

The entry point of the console script. Each top-level command lives in its own module and is
imported only when it runs (`usage.Lazy`): ``llmctl --help`` imports none of them, and a command
imports what it uses and nothing else (`tests/e2e/test_cli_imports.py` holds that). Commands
are thin: they parse options, call the domain through `controller.runner`, and print. Exit
codes: 0 success, 1 a service could not be used (database unreachable), 2 invalid input
(nothing written).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller import natsoptions, runner, usage
from dwqueue import natsauth

_DECLARE = "Declare"
_OPERATE = "Operate"
_RUN = "Run"

COMMANDS = {
    "apply": usage.Lazy(
        "controller.files:apply_command",
        "Apply declarative files in one transaction; every file is validated first.",
        _DECLARE,
    ),
    "delete": usage.Lazy(
        "controller.files:delete_command",
        "Delete every object the files name (kind and metadata.name), in one transaction.",
        _DECLARE,
    ),
    "backend": usage.Lazy(
        "controller.declare:backend_app", "Declare the backends llmctl manages.", _DECLARE
    ),
    "model": usage.Lazy(
        "controller.models:model_app", "Declare the models backends should serve.", _DECLARE
    ),
    "adapter": usage.Lazy(
        "controller.adapters:app",
        "Declare LoRA adapters, loaded on vLLM backends where pools place them.",
        _DECLARE,
    ),
    "pool": usage.Lazy(
        "controller.pools:app",
        "Group backends and models: a backend serves its pools' models.",
        _DECLARE,
    ),
    "downloads": usage.Lazy(
        "controller.downloads:app",
        "List, cancel and retry model downloads (pulls onto Ollama backends).",
        _OPERATE,
    ),
    "reconcile": usage.Lazy(
        "controller.reconcile:reconcile_command",
        "Run one reconciliation pass: observe, plan, act. Exit 1 with --wait if not converged.",
        _OPERATE,
    ),
    "watch": usage.Lazy(
        "controller.watch:watch_command",
        "Follow downloads live: one progress bar per job, from NATS (Ctrl-C to stop).",
        _OPERATE,
    ),
    "status": usage.Lazy(
        "controller.overview:status_command",
        "Show the fleet at a glance: backends by phase, models, downloads, last cycle, replicas.",
        _OPERATE,
    ),
    "resolve": usage.Lazy(
        "controller.resolve:resolve_command",
        "Show which provider a request would get, its fallbacks, and why others were excluded.",
        _OPERATE,
    ),
    "serve": usage.Lazy(
        "controller.serve:serve_command",
        "Run the controller: scheduled cycles, downloads, triggers and /metrics until stopped.",
        _RUN,
    ),
    "gateway": usage.Lazy(
        "controller.gatewaycommand:gateway_command",
        "Serve one OpenAI-compatible endpoint for the fleet, routed by the resolver.",
        _RUN,
    ),
    "demo": usage.Lazy(
        "controller.demo:demo_command",
        "Run a self-contained demo: emulated nodes, embedded NATS, pulls converging live.",
        _RUN,
    ),
    "emulate": usage.Lazy(
        "controller.emulate:app",
        "Run a protocol-faithful Ollama, vLLM or Hugging Face Hub emulator.",
        _RUN,
    ),
    "node": usage.Lazy(
        "controller.node:app",
        "Run the node agent on a GPU host: weights and vllm serve instances over an HTTP API.",
        _RUN,
    ),
    "db": usage.Lazy("controller.migration:app", "Manage the database schema.", _RUN),
    "completion": usage.Lazy(
        "controller.completion:completion_command",
        "Print the shell completion script for SHELL (bash, zsh or fish).",
        _RUN,
    ),
    "key": usage.Lazy(
        "controller.keys:app",
        "Manage the gateway's virtual API keys: what each may use and spend.",
        _DECLARE,
    ),
    "price": usage.Lazy(
        "controller.prices:app",
        "Declare what models cost, for the gateway's spend and budgets.",
        _DECLARE,
    ),
    "secrets": usage.Lazy(
        "controller.secrets:app", "Manage the key that encrypts stored API keys.", _RUN
    ),
}


class Llmctl(usage.Root):
    lazy = COMMANDS


app = typer.Typer(
    name="llmctl",
    cls=Llmctl,
    help="Declare which models your Ollama, vLLM and cloud backends serve; llmctl converges them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,  # `llmctl completion SHELL` instead (controller.completion)
)


@app.callback()
def main_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="LLMCTL_DATABASE_URL",
            help="sqlite:///path/file.db or postgresql://user@host/db "
            "[default: a SQLite file in the user's data directory]",
            show_default=False,
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            envvar="LLMCTL_NATS_URL",
            help="nats://host:4222 of the NATS server llmctl publishes events on",
            show_default=False,
        ),
    ] = None,
    prefix: Annotated[
        str,
        typer.Option(
            "--subject-prefix", envvar="LLMCTL_SUBJECT_PREFIX", help="NATS subject prefix"
        ),
    ] = "llmctl",
    nats_creds: natsoptions.CredsOpt = None,
    nats_nkey: natsoptions.NkeyOpt = None,
    nats_user: natsoptions.UserOpt = None,
    nats_password_file: natsoptions.PasswordFileOpt = None,
    nats_token_file: natsoptions.TokenFileOpt = None,
    nats_ca: natsoptions.CaOpt = None,
    nats_cert: natsoptions.CertOpt = None,
    nats_key: natsoptions.KeyOpt = None,
) -> None:
    env = runner.Env(
        database_url=database_url or runner.default_database_url(), nats_url=nats_url, prefix=prefix
    )
    ctx.obj = env
    given = {p for p in ctx.params if _from_command_line(ctx, p)}
    problem = natsoptions.conflict(ctx.params, given, env.environ)
    if problem is not None:
        env.fail(problem)
    try:
        env.nats_auth = natsoptions.auth(ctx.params, given, env.environ)
    except natsauth.NatsAuthError as exc:
        env.fail(str(exc), 1)


def _from_command_line(ctx: typer.Context, param: str) -> bool:
    source = ctx.get_parameter_source(param)
    return source is not None and source.name == "COMMANDLINE"  # typer vendors its own click


def _env(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


@app.command("export", rich_help_panel=_DECLARE)
def export(
    ctx: typer.Context,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            "-l",
            help="Only objects whose labels match (zone=a, gpu in (h100,a100), !draining, ...)",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Only these kinds: Backend, Model, Pool, Adapter (repeatable or a comma list)",
        ),
    ] = None,
) -> None:
    """Print the desired state as a file that llmctl apply -f accepts unchanged.

    With --kind or -l, only the objects chosen; a pool is printed only when chosen, with its
    members as declared (a note on stderr names those left out of the file)."""
    from controller import output, selection
    from runtimestate.desired import excerpt, manifest, store

    env = _env(ctx)
    chosen = selection.selected(env, selector)
    try:
        part = excerpt.Excerpt(excerpt.kinds(kind or ()), chosen)
    except runner.user_errors() as exc:
        env.fail(str(exc))
    missing: list[str] = []

    def cut(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = part.cut(docs)
        missing.extend(excerpt.missing_members(kept))
        return kept

    state = runner.read(env, store.load)
    filtered = kind is not None or selector is not None
    output.write(env.out, manifest.export(state, cut if filtered else None), end="")
    for note in missing:
        env.err.print(
            f"note: {note}, which is not in this export; apply needs it in the database",
            highlight=False,
        )


def main() -> None:
    app()
