"""The gateway: one OpenAI-compatible endpoint for the whole fleet (`llmctl gateway`).

Serves OpenAI's wire format, routes each request through `runtimestate.resolver`, forwards it
to a provider with failover, and holds the virtual API keys, prices, limits and budgets it
enforces. Called by `controller` (the ``llmctl gateway``, ``key`` and ``price`` commands); it
imports `runtimestate` and `dwqueue`, never `controller`.
"""
