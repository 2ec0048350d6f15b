"""The gateway: one OpenAI-compatible endpoint for the whole fleet (``llmctl gateway``).

An aiohttp application (`application.build`) serving ``/v1/chat/completions``,
``/v1/completions``, ``/v1/embeddings`` and ``/v1/models`` in OpenAI's wire format. Each request
is read and checked (`inbound`), admitted by the key hook (`access`), resolved by
`runtimestate.resolver` and forwarded (`forwarding`) to the provider's OpenAI-compatible base URL
(`upstreams`), failing over before the first byte; the reply is relayed as it arrives
(`relaying`); errors are OpenAI's envelope (`envelopes`); ``/v1/models`` is `catalog`.
Replies to deterministic requests are kept and served again by `replycache`.

The virtual API keys, prices, limits and budgets it enforces: `keys` and `keystore` (the
records), `keyring` (finding a key by its hash), `permissions` (which models a key may use),
`prices`, `budgets` and `ratelimit` (pure accounting).

Called by ``llmctl gateway`` (`controller.gatewaycommand`), the ``key`` and ``price`` commands,
and tests. Imports runtimestate and dwqueue, never controller; it never logs or returns a
provider's credential.
"""
