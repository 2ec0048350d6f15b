"""`llmctl node`: run the node agent (`nodeagent`) on a GPU host.

A thin typer wrapper: `serve` reads its options, the token (``--token-file`` or
``LLMCTL_NODE_TOKEN``, never a command-line value) and the hub endpoint (``--hf-endpoint`` or
``HF_ENDPOINT``), builds `nodeagent.weights.Cache`, the instance supervisor
(`nodeagent.instances`: GPUs from ``--gpus`` or NVML, ``--state-dir``, ``--command``, where
instances listen, ``--instance-host``, and the host their URLs carry, ``--advertise-host``,
both checked by `nodeagent.addresses`) and
`nodeagent.api`, prints one line saying where it listens and serves until Ctrl-C or SIGTERM
(every instance stopped, then exit 0). Bad options exit 2 with one line, before anything
listens; instances bound beyond loopback without ``--api-key`` in the command get a one-line
warning on stderr. One agent per ``--state-dir`` (`nodeagent.statelock`): a second one exits 1 at
once naming the pid that holds it. `nodeagent` is imported inside the command so
``llmctl --help`` stays light.
Registered by the CLI root as `llmctl node`; never prints the token, nor passes it to instances.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
from typing import TYPE_CHECKING, NoReturn

import typer

from controller import datadir

if TYPE_CHECKING:
    from nodeagent.instances import Settings, Supervisor

HELP = "Run the node agent on a GPU host: weights and vllm serve instances over an HTTP API."
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
    gpus: str | None = typer.Option(
        None,
        metavar="GPUS",
        help="Declare the GPUs (2x80GiB, 1x24GB, 80GiB,40GiB) [default: read through NVML]",
        show_default=False,
    ),
    state_dir: pathlib.Path | None = typer.Option(
        None,
        metavar="DIR",
        help="Record and logs of instances [default: node/state in llmctl's data directory]",
        show_default=False,
    ),
    command: str | None = typer.Option(
        None,
        "--command",
        metavar="TEMPLATE",
        help="Instance command, split like a shell line, with placeholders for the weights "
        "path, served name, host and port (see the README) [default: vllm serve]",
        show_default=False,
    ),
    instance_host: str = typer.Option(
        "127.0.0.1",
        metavar="HOST",
        help="Address instances listen on (0.0.0.0 or :: for every interface).",
    ),
    advertise_host: str | None = typer.Option(
        None,
        metavar="HOST",
        help="Host name or address put in each instance's URL [default: the instance host; "
        "for 0.0.0.0 or ::, this machine's fully-qualified name]",
        show_default=False,
    ),
) -> None:
    """Serve the node agent's API (weights; vllm serve instances on this node's GPUs) until
    Ctrl-C or SIGTERM, which stops every instance first.

    Every route but /v1/health needs 'Authorization: Bearer TOKEN'. HF_TOKEN is the token
    for gated or private repos."""
    from nodeagent import api, auth, statelock, weights

    try:
        token = auth.load(token_file, os.environ)
    except auth.TokenError as exc:
        _fail(str(exc))
    data = datadir.from_environment() / "node"
    root = (cache_dir or data / "cache").expanduser().absolute()
    endpoint = hf_endpoint or os.environ.get("HF_ENDPOINT") or None
    cache = weights.Cache(root, endpoint=endpoint)
    state = (state_dir or data / "state").expanduser().absolute()
    supervisor = _supervisor(state, gpus, command, _network(instance_host, advertise_host))
    served = api.build(cache, token=token, supervisor=supervisor)
    settings = supervisor.settings

    def announce(url: str) -> None:
        guard = "bearer token required" if token else "no token: loopback only"
        where = f"instances on {settings.host} as {settings.advertise_host}"
        typer.echo(
            f"node agent listening on {url} (API {api.VERSION}, cache {root}, {where}, {guard})"
        )

    try:
        api.check_host(host, token)  # before the lock creates the state directory
        _warn_if_open(settings)
        with statelock.held(state):
            api.serve(served, host=host, port=port, token=token, announce=announce)
    except statelock.StateDirBusy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except statelock.StateDirUnusable as exc:
        _fail(str(exc))
    except api.ConfigurationError as exc:
        _fail(str(exc))


def _network(instance_host: str, advertise_host: str | None) -> Settings:
    """Settings with where instances listen and the host they advertise; exits 2 on bad ones."""
    from nodeagent import addresses, instances

    try:
        addresses.check_instance_host(instance_host)
        advertised = addresses.advertised(instance_host, advertise_host)
    except addresses.AddressError as exc:
        _fail(str(exc))
    return instances.Settings(host=instance_host, advertise_host=advertised)


def _warn_if_open(settings: Settings) -> None:
    """One line on stderr when instances listen beyond loopback with no vLLM --api-key."""
    from nodeagent import auth, command

    if not auth.is_loopback(settings.host) and command.api_key(settings.template) is None:
        typer.echo(
            f"warning: instances listen on {settings.host} without --api-key in the instance "
            "command: anyone who reaches them can use them; add --api-key KEY to --command",
            err=True,
        )


def _supervisor(
    state: pathlib.Path, declared: str | None, template: str | None, settings: Settings
) -> Supervisor:
    """The instance supervisor the options describe; exits 2 naming a bad option."""
    from nodeagent import auth, command, gpus, instances

    try:
        found = gpus.parse(declared) if declared is not None else gpus.from_nvml()
    except gpus.InventoryError as exc:
        _fail(str(exc))
    if template is not None:
        try:
            argv = tuple(shlex.split(template))
            command.check_template(argv)
        except (ValueError, command.SpecError) as exc:
            _fail(f"--command {template!r}: {exc}")
        settings = dataclasses.replace(settings, template=argv)
    # Instances never see the agent's own token.
    environment = {k: v for k, v in os.environ.items() if k != auth.ENV_VAR}
    return instances.Supervisor(state, gpus.Inventory(found), settings, environment=environment)
