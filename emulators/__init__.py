"""Protocol-faithful Ollama and vLLM servers for tests, benchmarks and `llmctl demo`.

The wire behaviour follows /work/shared/PROTOCOLS.md (§1 Ollama, §3 vLLM). This package imports
nothing of `controller`, `runtimestate` or `dwqueue` (import-linter enforces it), so it cannot be
bent to fit the controller.

Python API (stable; every entry point takes the same keyword options)::

    from emulators import faults, ollama, vllm

    # In an event loop (pytest-asyncio). Port 0 picks a free port; loopback by default.
    async with ollama.running(
        installed=["qwen2:0.5b"],  # already on disk, from the catalog
        nodes=1,                   # N independent nodes, served under /nodes/<i>
        catalog=None,              # Catalog, JSON/YAML path, or None = built-in
        pull_rate=None,            # bytes/s per blob; None or 0 = instant
        tick_interval=0.06,        # seconds between pull progress lines
        disk_capacity=None,        # bytes per node; None = unlimited
        version="0.30.0",          # what /api/version answers
        ttft=0.0, token_delay=0.0, # inference pace in seconds (node.pace, `pacing`)
        host="127.0.0.1", port=0,
    ) as emu:
        emu.url                    # "http://127.0.0.1:<port>"; node 0 when nodes == 1
        emu.node_url(i)            # "<url>/nodes/<i>": give it to ollama.Client(host=...)
        emu.nodes[i]               # ollama_node.OllamaNode: .installed, .loaded, .disk,
                                   # .downloads, .download_starts, .pulls, .requests,
                                   # .faults, .pull_rate, .clock, .state(), .reset()
        emu.set_fault(faults.Fault(faults.FaultKind.RESET, after_lines=2),
                      endpoint="/api/pull", node=None)   # None = every node
        emu.clear_faults(); emu.reset()

    async with vllm.running(
        model="Qwen/Qwen2.5-0.5B-Instruct",  # the `--model` argument (card `root`)
        served_model_names=["my-model"],     # aliases; default [model]
        max_model_len=32768,
        version="0.33.0",          # >= 0.10.1 nested error envelope; metric names by version
        api_key=None,              # bearer key required under /v1
        enable_lora=False,         # runtime LoRA load/unload routes
        runner="generate",         # "generate": chat completions; "pooling": embeddings
        embedding_size=384, ttft=0.0, token_delay=0.0, nodes=1, host="127.0.0.1", port=0,
    ) as emu:
        emu.nodes[i]               # vllm_node.VllmNode: .running, .waiting, .kv_cache_usage,
                                   # .healthy, .loras, .missing_lora_paths, .version, ...

    # Types: ollama.Emulator = runner.Emulator[ollama_node.OllamaNode], vllm.Emulator likewise.
    with ollama.in_thread(installed=[...]) as emu: ...   # server on a background thread,
    with vllm.in_thread(...) as emu: ...                 # for sync clients (ollama.Client)
    ollama.serve(host, port, announce, **options)        # blocking; `llmctl emulate ollama`
    vllm.serve(host, port, announce, **options)          # blocking; `llmctl emulate vllm`
    ollama.build(**options) / vllm.build(**options)      # the server.Host, not listening

Faults (`faults.Fault(kind, latency=0.0, after_lines=0, size=4_000_000, retry_after=1.0,
times=None)`), kinds `latency`, `hang`, `http_500`, `http_503`, `http_429`, `reset`, `malformed`,
`oversized`, `stream_error`, `truncate` (see `faults`), armed per node and per endpoint path
(`"*"` = all). Every request is counted per node as `"<METHOD> <path>"`.

Admin HTTP API, outside the emulated one (root = every node, or `"node": i` in the body;
`/nodes/<i>/_emulator/...` = that node only):

    GET    /_emulator/state     {"flavour", "nodes": [node.state(), ...]} incl. request counts
    POST   /_emulator/state     patch: ollama {installed, disk_capacity, pull_rate, tick_interval,
                                version}; vllm {running, waiting, kv_cache_usage, healthy, version};
                                both {ttft, token_delay}
    POST   /_emulator/faults    {"kind": "reset", "endpoint": "/api/pull", "after_lines": 2, ...}
    DELETE /_emulator/faults    disarm all (or ?endpoint=/api/pull)
    POST   /_emulator/reset     initial models, no faults, zero counters

The Hugging Face Hub (for the node agent's weight pulls, PROTOCOLS part A) is `hfhub`:
`hfhub.running(repos=[hfhub.RepoSpec("org/name", {"config.json": b"{}", "w.bin": 24 << 20},
gated=False, private=False, tokens=frozenset())], pull_rate=None)`; see its docstring.

Modules: `hfhub`, `hfhub_node`, `hfhub_repos`, `ollama`, `ollama_node`, `ollama_pull`,
`ollama_inference`, `ollama_openai`, `ollama_wire`, `catalog`, `names`, `downloads`, `vllm`,
`vllm_node`, `vllm_openai`, `vllm_completions`, `vllm_metrics`, `faults`, `pacing`, `streams`,
`server`, `runner`, `embeddings`, `timestamps`.
"""

from emulators import faults, hfhub, ollama, vllm

__all__ = ["faults", "hfhub", "ollama", "vllm"]
