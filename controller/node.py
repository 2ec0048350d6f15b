"""`llmctl node`: run the node agent (`nodeagent`) on a GPU host.

A thin typer wrapper: `serve` reads its options, the token (``--token-file`` or
``LLMCTL_NODE_TOKEN``, never a command-line value) and the hub endpoint (``--hf-endpoint`` or
``HF_ENDPOINT``), builds `nodeagent.weights.Cache` and `nodeagent.api`, prints one line saying
where it listens and serves until Ctrl-C or SIGTERM (exit 0). Bad options exit 2 with one line,
before anything listens. `nodeagent` is imported inside the command so ``llmctl --help`` stays
light. Registered by the CLI root as `llmctl node`; never prints the token.
"""

from __future__ import annotations

import os
import pathlib
from typing import NoReturn

import typer

from controller import datadir

HELP = "Run the node agent on a GPU host: model weights over a versioned HTTP API."
DEFAULT_PORT = 8700

app = typer.Typer(help=HELP, no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind; not loopback needs a token."),
    port: int = typer.Option(DEFAULT_PORT, min=0, max=65535, help="Port (0 picks a free one)."),
    cache_dir: pathlib.Path | None = typer.Option(
        None,
        metavar="DIR",
        help="Where weights are kept [default: node/cache in llmctl's data directory]",
        show_default=False,
    ),
    token_file: pathlib.Path | None = typer.Option(
        None,
        metavar="FILE",
        help="File holding the bearer token the API requires [default: $LLMCTL_NODE_TOKEN]",
        show_default=False,
    ),
    hf_endpoint: str | None = typer.Option(
        None,
        help="Hugging Face Hub URL to pull from [default: $HF_ENDPOINT, else the Hub]",
        show_default=False,
    ),
) -> None:
    """Serve the node agent's API (weights: list, pull, delete) until Ctrl-C or SIGTERM.

    Every route but /v1/health needs 'Authorization: Bearer TOKEN'. HF_TOKEN is the token
    for gated or private repos."""
    from nodeagent import api, auth, weights

    try:
        token = auth.load(token_file, os.environ)
    except auth.TokenError as exc:
        _fail(str(exc))
    root = (cache_dir or datadir.from_environment() / "node" / "cache").expanduser().absolute()
    endpoint = hf_endpoint or os.environ.get("HF_ENDPOINT") or None
    cache = weights.Cache(root, endpoint=endpoint)
    served = api.build(cache, token=token)

    def announce(url: str) -> None:
        guard = "bearer token required" if token else "no token: loopback only"
        typer.echo(f"node agent listening on {url} (API {api.VERSION}, cache {root}, {guard})")

    try:
        api.serve(served, host=host, port=port, token=token, announce=announce)
    except api.ConfigurationError as exc:
        _fail(str(exc))
