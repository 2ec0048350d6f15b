"""The node agent: what runs on a GPU host so that a vLLM node converges like an Ollama node.

``llmctl node serve`` (issue 15) pulls model weights into the node's cache with the real
``huggingface_hub`` client, starts, watches, restarts and stops ``vllm serve`` instances on the
node's GPUs, and answers the controller over a small HTTP API. It owns processes, never the
database: the controller decides. It imports nothing of ``controller``, ``runtimestate``,
``dwqueue`` or ``emulators`` (an import-linter contract holds it), so a GPU host installs only
``llmctl[node]``.

`api` serves the HTTP API (`auth` checks its token, `instanceapi` holds the instance
routes); `weights` is the weights cache; `instances` supervises the model-server processes
(`instance`, `command`, `processes`, `probe`, `restarts`, `record`); `gpus` is the GPU
inventory. ARCHITECTURE.md maps them.
"""
