"""Where a provider's OpenAI-compatible API is, and how the gateway authenticates to it.

`Upstream.of(provider)` gives the URL of one endpoint (``chat/completions``...) under the
provider's OpenAI base: ``<base>/v1`` for vLLM and Ollama servers (their base URL is the server
root), a node agent's instance URL as is (it already ends in ``/v1``), an OpenAI-compatible
cloud's base as is (it includes its version), and Gemini's ``/v1beta/openai``. A cloud's stored
key goes only into the ``Authorization`` header; `Upstream.redact` masks it (and its long
fragments) out of any text the provider sent back before the gateway passes that text on.
Called by `forwarding`; it sends nothing itself and never logs.
"""

from __future__ import annotations

import dataclasses

from runtimestate.backends import redaction
from runtimestate.desired import spec
from runtimestate.resolver import resolution

_SERVER_ROOT = frozenset({spec.BackendType.OLLAMA.value, spec.BackendType.VLLM.value})


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Upstream:
    """One provider's OpenAI base URL and headers. The ``repr`` names no credential."""

    base: str
    headers: dict[str, str]
    _secret: str | None

    @classmethod
    def of(cls, provider: resolution.Provider) -> Upstream:
        """Raises `credentials.CredentialError` when the provider's key cannot be read."""
        secret = provider.credentials()
        revealed = secret.reveal() if secret is not None else None
        headers = {"Content-Type": "application/json"}
        if revealed:
            headers["Authorization"] = f"Bearer {revealed}"
        return cls(openai_base(provider.type, provider.base_url), headers, revealed)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def redact(self, text: str) -> str:
        """``text`` without this provider's key or any long piece of it."""
        return redaction.mask(text, self._secret)

    def __repr__(self) -> str:
        return f"Upstream(base={self.base!r})"


def openai_base(backend_type: str, base_url: str) -> str:
    """The OpenAI-compatible API root (ending in its version) of a backend or instance URL."""
    base = base_url.rstrip("/")
    if backend_type in _SERVER_ROOT and not base.endswith("/v1"):
        return f"{base}/v1"
    if backend_type == spec.BackendType.GEMINI.value:
        if base.endswith(("/v1beta", "/v1")):
            return f"{base}/openai"
        return f"{base}/v1beta/openai"
    return base
