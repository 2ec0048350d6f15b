"""The `/metrics` text of the vLLM emulator, shaped by the emulated version (PROTOCOLS §3.7).

- before 0.9: the V0 engine, `vllm:gpu_cache_usage_perc` only, label `model_name` only;
- 0.9.x: V1 labels `model_name` and `engine`, both cache gauge names;
- from 0.10: only `vllm:kv_cache_usage_perc`.

Pure: renders a `VllmNode`'s gauges and counters in the Prometheus text format.
"""

from __future__ import annotations

from emulators import vllm_node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HELP = {
    "vllm:num_requests_running": "Number of requests in model execution batches.",
    "vllm:num_requests_waiting": "Number of requests waiting to be processed.",
    "vllm:kv_cache_usage_perc": "KV-cache usage. 1 means 100 percent usage.",
    "vllm:gpu_cache_usage_perc": "GPU KV-cache usage. 1 means 100 percent usage.",
    "vllm:prompt_tokens": "Number of prefill tokens processed.",
    "vllm:generation_tokens": "Number of generation tokens processed.",
    "vllm:request_success": "Count of successfully processed requests.",
}


def render(node: vllm_node.VllmNode) -> str:
    """The whole exposition text for `node`."""
    version = node.version_info
    labels = _labels(node, engine=version >= vllm_node.ENGINE_LABEL_SINCE)
    cache = []
    if version >= (0, 9, 0):
        cache.append("vllm:kv_cache_usage_perc")
    if version < vllm_node.OLD_CACHE_METRIC_BEFORE:
        cache.append("vllm:gpu_cache_usage_perc")
    gauges = [
        ("vllm:num_requests_running", node.running),
        ("vllm:num_requests_waiting", node.waiting),
        *((name, node.kv_cache_usage) for name in cache),
    ]
    lines: list[str] = []
    for name, value in gauges:
        lines += _family(name, "gauge", [(labels, value)])
    for name in ("vllm:prompt_tokens", "vllm:generation_tokens"):
        value = float(node.counters[name.removeprefix("vllm:")])
        lines += _family(name, "counter", [(labels, value)], suffix="_total")
    success = [
        (labels + f',finished_reason="{reason}"', float(node.counters[f"success_{reason}"]))
        for reason in ("stop", "length", "abort")
    ]
    lines += _family("vllm:request_success", "counter", success, suffix="_total")
    if node.enable_lora:
        lines += _lora_info(node)
    return "\n".join(lines) + "\n"


def _labels(node: vllm_node.VllmNode, engine: bool) -> str:
    model = f'model_name="{node.served_model_names[0]}"'
    return f'engine="0",{model}' if engine else model


def _family(name: str, kind: str, samples: list[tuple[str, float]], suffix: str = "") -> list[str]:
    lines = [f"# HELP {name}{suffix} {_HELP[name]}", f"# TYPE {name}{suffix} {kind}"]
    lines += [f"{name}{suffix}{{{labels}}} {float(value)!r}" for labels, value in samples]
    return lines


def _lora_info(node: vllm_node.VllmNode) -> list[str]:
    name = "vllm:lora_requests_info"
    running = ",".join(node.loras) if node.running else ""
    labels = f'max_lora="1",running_lora_adapters="{running}",waiting_lora_adapters=""'
    return [
        f"# HELP {name} Running stats on lora requests.",
        f"# TYPE {name} gauge",
        f"{name}{{{labels}}} 1.0",
    ]
