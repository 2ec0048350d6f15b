"""The declaring commands of models: ``llmctl model add|update|list|get|delete``.

Each command validates its options, runs one transaction through `controller.runner`, and
prints a kubectl-style confirmation (``model/llama3 created``) or a document in the chosen
output format. Invalid input exits 2 with a message naming the field; nothing is written. The
options are the ones `controller.declare` defines for every declaring command.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from controller import declare, modelupgrades, output, runner, selection, shapes
from runtimestate.desired import engineargs, spec, updatepolicy

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

# The stores are imported by the commands that use them (tests/e2e/test_cli_imports.py).

model_app = typer.Typer(help="Declare the models backends should serve.", no_args_is_help=True)

# The `vllm` block: the engine arguments a node agent starts `vllm serve` with.
_WHOLE = declare.whole_number
MaxModelLenOpt = Annotated[
    int | None,
    typer.Option("--vllm-max-model-len", parser=_WHOLE, help="vllm serve --max-model-len (tokens)"),
]
TensorParallelOpt = Annotated[
    int | None,
    typer.Option(
        "--vllm-tensor-parallel-size", parser=_WHOLE, help="vllm serve --tensor-parallel-size"
    ),
]
GpusOpt = Annotated[
    int | None,
    typer.Option(
        "--vllm-gpus", parser=_WHOLE, help="GPUs an instance needs (default: the TP size)"
    ),
]
UtilizationOpt = Annotated[
    float | None,
    typer.Option(
        "--vllm-gpu-memory-utilization", help="vllm serve --gpu-memory-utilization, in (0, 1]"
    ),
]
DtypeOpt = Annotated[str | None, typer.Option("--vllm-dtype", help="|".join(engineargs.DTYPES))]
QuantizationOpt = Annotated[
    str | None,
    typer.Option("--vllm-quantization", help="vllm serve --quantization (awq, gptq, fp8...)"),
]
LoraOpt = Annotated[
    bool | None,
    typer.Option("--vllm-enable-lora/--vllm-disable-lora", help="vllm serve --enable-lora"),
]
WarmOpt = Annotated[
    bool | None,
    typer.Option("--warm/--no-warm", help="Keep it loaded on the Ollama backends placing it"),
]
KeepAliveOpt = Annotated[
    str | None,
    typer.Option("--keep-alive", help="Ollama keep_alive of a warm model: 5m, 1h30m, -1 (forever)"),
]
PolicyOpt = Annotated[
    str | None,
    typer.Option("--update-policy", help="manual (report upgrades only) or auto (roll them out)"),
]
MaxUnavailableOpt = Annotated[
    int | None,
    typer.Option("--max-unavailable", parser=_WHOLE, help="Copies upgrading at once (default 1)"),
]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option("--vllm-arg", help="An extra vllm serve argument (repeatable; sets them exactly)"),
]


def _vllm(
    old: engineargs.VllmArgs | None, extra_args: list[str] | None, **given: object
) -> engineargs.VllmArgs | None:
    """``old`` with the engine arguments given on the command line replaced; validated."""
    changes = {key: value for key, value in given.items() if value is not None}
    if extra_args:
        changes["extra_args"] = tuple(extra_args)
    if not changes:
        return old
    return spec.vllm_args(dataclasses.replace(old or engineargs.VllmArgs(), **changes))  # type: ignore[arg-type]


def _rollout(
    old: updatepolicy.Rollout, policy: str | None, most: int | None
) -> updatepolicy.Rollout:
    """``old`` with the update policy and maxUnavailable given; raises ValueError."""
    return updatepolicy.Rollout(
        old.policy if policy is None else updatepolicy.policy(policy),
        old.max_unavailable if most is None else updatepolicy.max_unavailable(most),
    )


@model_app.command("add")
def model_add(
    ctx: typer.Context,
    name: str,
    pool: declare.PoolOpt = None,
    no_pool: declare.NoPoolOpt = False,
    context_length: Annotated[
        int | None,
        typer.Option(
            "--context-length",
            help="Override the context length",
            parser=declare.whole_number,
        ),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", help="chat, embed, prompt or stream (repeatable)"),
    ] = None,
    label: declare.LabelOpt = None,
    vllm_max_model_len: MaxModelLenOpt = None,
    vllm_tensor_parallel_size: TensorParallelOpt = None,
    vllm_gpus: GpusOpt = None,
    vllm_gpu_memory_utilization: UtilizationOpt = None,
    vllm_dtype: DtypeOpt = None,
    vllm_quantization: QuantizationOpt = None,
    vllm_enable_lora: LoraOpt = None,
    vllm_arg: ArgOpt = None,
    warm: WarmOpt = None,
    keep_alive: KeepAliveOpt = None,
    update_policy: PolicyOpt = None,
    max_unavailable: MaxUnavailableOpt = None,
) -> None:
    """Declare a model. It joins the default pool unless told otherwise."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    pools = declare.pools_of(env, pool, no_pool, [spec.DEFAULT_POOL])
    assert pools is not None
    labels = declare.labels_of(env, {}, label)
    try:
        vllm = _vllm(
            None, vllm_arg, max_model_len=vllm_max_model_len,
            tensor_parallel_size=vllm_tensor_parallel_size, gpus=vllm_gpus,
            gpu_memory_utilization=vllm_gpu_memory_utilization, dtype=vllm_dtype,
            quantization=vllm_quantization, enable_lora=vllm_enable_lora,
        )  # fmt: skip
        value = spec.ModelSpec(name, context_length, spec.capabilities(capability), labels, vllm)
        value = dataclasses.replace(value, warm=bool(warm), keep_alive=keep_alive)
        update = _rollout(value.update, update_policy, max_unavailable)
    except (spec.SpecError, ValueError) as exc:
        env.fail(str(exc))
    value = dataclasses.replace(value, update=update)
    runner.transaction(env, lambda s: store.add_model(s, value, pools))
    env.out.print(f"model/{name} created", highlight=False)
    runner.notify(env)


@model_app.command("update")
def model_update(
    ctx: typer.Context,
    name: declare.ModelArg,
    pool: declare.PoolUpdateOpt = None,
    no_pool: declare.NoPoolUpdateOpt = False,
    context_length: Annotated[
        int | None, typer.Option("--context-length", parser=declare.whole_number)
    ] = None,
    no_context_length: Annotated[
        bool, typer.Option("--no-context-length", help="Use the backend's")
    ] = False,
    capability: Annotated[
        list[str] | None, typer.Option("--capability", help="Set exactly (repeatable)")
    ] = None,
    no_capabilities: Annotated[
        bool, typer.Option("--no-capabilities", help="Use the backend's")
    ] = False,
    label: declare.LabelUpdateOpt = None,
    vllm_max_model_len: MaxModelLenOpt = None,
    vllm_tensor_parallel_size: TensorParallelOpt = None,
    vllm_gpus: GpusOpt = None,
    vllm_gpu_memory_utilization: UtilizationOpt = None,
    vllm_dtype: DtypeOpt = None,
    vllm_quantization: QuantizationOpt = None,
    vllm_enable_lora: LoraOpt = None,
    vllm_arg: ArgOpt = None,
    no_vllm: Annotated[
        bool, typer.Option("--no-vllm", help="Clear the engine arguments (vllm block)")
    ] = False,
    warm: WarmOpt = None,
    keep_alive: KeepAliveOpt = None,
    no_keep_alive: Annotated[
        bool, typer.Option("--no-keep-alive", help="Use the backend's default keep_alive")
    ] = False,
    update_policy: PolicyOpt = None,
    max_unavailable: MaxUnavailableOpt = None,
) -> None:
    """Change a model's overrides, labels, engine arguments or pools; the generation goes up
    on a real change."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    pools = declare.pools_of(env, pool, no_pool, None)
    given = {
        "max_model_len": vllm_max_model_len, "tensor_parallel_size": vllm_tensor_parallel_size,
        "gpus": vllm_gpus, "gpu_memory_utilization": vllm_gpu_memory_utilization,
        "dtype": vllm_dtype, "quantization": vllm_quantization, "enable_lora": vllm_enable_lora,
    }  # fmt: skip
    vllm_given = vllm_arg or any(v is not None for v in given.values())
    if (
        (context_length is not None and no_context_length)
        or (capability and no_capabilities)
        or (vllm_given and no_vllm)
        or (keep_alive is not None and no_keep_alive)
    ):
        env.fail("an option and its --no- form contradict each other; give one of them")
    try:  # checked before reading: a bad value exits 2 with nothing read or written
        _rollout(updatepolicy.DEFAULT, update_policy, max_unavailable)
    except ValueError as exc:
        env.fail(str(exc))

    async def work(session: AsyncSession) -> bool:
        old = (await store.get_model(session, name)).spec
        vllm = None if no_vllm else _vllm(old.vllm, vllm_arg, **given)
        value = spec.ModelSpec(
            old.name,
            None
            if no_context_length
            else (old.context_length if context_length is None else context_length),
            None
            if no_capabilities
            else (spec.capabilities(capability) if capability else old.capabilities),
            declare.labels_of(env, dict(old.labels), label),
            vllm,
            old.warm if warm is None else warm,
            None if no_keep_alive else (old.keep_alive if keep_alive is None else keep_alive),
            _rollout(old.update, update_policy, max_unavailable),
        )
        _, changed = await store.update_model(session, value, pools)
        return changed

    runner.update(env, "model", name, work)


@model_app.command("list")
def model_list(
    ctx: typer.Context,
    fmt: declare.OutputOpt = output.Format.TABLE,
    selector: selection.SelectorOpt = None,
) -> None:
    """List the declared models (-l: those whose labels match; -o wide shows the labels)."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    chosen = selection.selected(env, selector)
    state = runner.read(env, store.load)
    models = [m for m in state.models if chosen.matches(m.spec.labels)]
    output.render_list("model", [shapes.model_doc(m, state) for m in models], fmt, env.out)


@model_app.command("get")
def model_get(
    ctx: typer.Context, name: declare.ModelArg, fmt: declare.OutputOpt = output.Format.TABLE
) -> None:
    """Show a model (llama3 finds llama3:latest) and the backends it is desired on."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    state = runner.read(env, store.load)
    try:
        model = state.model(name)
    except runner.user_errors() as exc:
        env.fail(str(exc))
    if model is None:
        env.fail(str(store.missing("model", name, (m.name for m in state.models))))
    doc = shapes.model_doc(model, state)
    doc["backends"] = [b.name for b in state.backends if model in state.models_for(b.name)]
    output.render_got("model", doc, fmt, env.out)


@model_app.command("delete")
def model_delete(ctx: typer.Context, name: declare.ModelArg) -> None:
    """Delete a model declaration (what is installed on backends is left to the prune policy)."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    runner.transaction(env, lambda s: store.delete_model(s, name))
    env.out.print(f"model/{name} deleted", highlight=False)
    runner.notify(env)


model_app.command("upgrades")(modelupgrades.model_upgrades)
model_app.command("upgrade")(modelupgrades.model_upgrade)
