"""The OpenAI-compatible adapter: `GET {base}/models` with a bearer key, observe only.

`base_url` is the API root including its version, as OpenAI SDKs expect it
(``https://api.openai.com/v1``, ``http://host:8000/v1``). The listing does not say what a model
can do, so capabilities are guessed from the id (`base.capabilities_from_model_id`) and declared
overrides win; a context length is taken when the server adds one (`max_model_len` from vLLM,
`context_length` from OpenRouter-style servers, `context_window` from Groq-style ones).

Who calls it: `backends.create`; the vLLM adapter reuses `models_from_listing`. It must not send
the key anywhere but the Authorization header, nor pull, delete or infer anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from runtimestate.backends import base, endpoint, transport

_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window")


class OpenAIBackend(endpoint.BearerEndpoint):
    """Adapter for one OpenAI-compatible endpoint. Async context manager; `aclose()`."""

    capabilities: ClassVar[base.Capabilities] = base.Capabilities()

    async def observe(self) -> base.Observation:
        """The models the key may use. Read-only; raises `errors.LlmctlError`."""
        async with self._guard():
            payload = await self._http.get_json("models")
            models = models_from_listing(payload, loaded=False)
        return base.Observation(models=models, healthy=True)

    async def health(self) -> bool:
        """True when the listing answers; raises the mapped error otherwise."""
        await self.observe()
        return True

    async def version(self) -> str | None:
        """OpenAI-compatible APIs publish no server version."""
        return None


def models_from_listing(
    payload: Mapping[str, Any], *, loaded: bool
) -> tuple[base.ObservedModel, ...]:
    """Parse ``{"object":"list","data":[{"id",...}]}``. A card with a `parent` (a vLLM LoRA
    adapter) inherits the parent's context length. Raises `transport.MalformedReply` when
    the reply breaks that shape."""
    data = transport.required(payload, "data", "the model list")
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise transport.MalformedReply("data is not a list")
    cards = [transport.expect_mapping(card, "model card") for card in data]
    contexts = {_card_id(card): _context(card) for card in cards}
    models = []
    for card in cards:
        model_id = _card_id(card)
        parent = card.get("parent")
        context = contexts[model_id]
        if context is None and isinstance(parent, str):
            context = contexts.get(parent)
        root = card.get("root")
        models.append(
            base.ObservedModel(
                name=model_id,
                model=root if isinstance(root, str) and root else model_id,
                details=base.ModelDetails(parent_model=parent if isinstance(parent, str) else None),
                context_length=context,
                capabilities=base.capabilities_from_model_id(model_id),
                loaded=loaded,
            )
        )
    return tuple(models)


def _card_id(card: Mapping[str, Any]) -> str:
    model_id = transport.required(card, "id", "a model card")
    if not isinstance(model_id, str) or not model_id:
        raise transport.MalformedReply("model id is not a non-empty string")
    return model_id


def _context(card: Mapping[str, Any]) -> int | None:
    for key in _CONTEXT_KEYS:
        value = transport.optional_int(card.get(key))
        if value is not None:
            return value
    return None
