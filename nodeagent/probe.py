"""Readiness and health of a model-server instance over HTTP, as vLLM answers them.

The supervisor (`nodeagent.instances`) calls `ready` while an instance starts and `healthy` once
it is ready. Per PROTOCOLS.md B.5 a starting ``vllm serve`` refuses connections until its
engine is loaded, then ``GET /health`` answers 200 (503 once the engine died); ``GET
/v1/models`` lists one card per served name (B.3). ``/health`` is never behind the API key.
Each returns a reason when the answer is no, for the instance's last error. Never raises for a
transport failure: a server that cannot be reached is simply not ready.
"""

from __future__ import annotations

import httpx


async def healthy(client: httpx.AsyncClient, url: str, seconds: float) -> str | None:
    """None when ``GET <url>/health`` answers 200, else why not."""
    try:
        response = await client.get(f"{url}/health", timeout=seconds)
    except httpx.HTTPError as exc:
        return f"/health did not answer: {type(exc).__name__}"
    if response.status_code != 200:
        return f"/health answered {response.status_code}"
    return None


async def ready(
    client: httpx.AsyncClient, url: str, name: str, seconds: float, api_key: str | None = None
) -> str | None:
    """None when the server is healthy and ``GET <url>/v1/models`` lists `name`, else why not.

    `api_key` is sent as a bearer token: with ``--api-key`` vLLM guards ``/v1`` (B.4).
    """
    unhealthy = await healthy(client, url, seconds)
    if unhealthy is not None:
        return unhealthy
    try:
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        response = await client.get(f"{url}/v1/models", timeout=seconds, headers=headers)
        cards = response.json().get("data") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return f"/v1/models did not answer a model list: {type(exc).__name__}"
    if not isinstance(cards, list):
        return f"/v1/models answered {response.status_code} without a model list"
    served = [card.get("id") for card in cards if isinstance(card, dict)]
    if name not in served:
        return f"/v1/models does not list {name!r} (it lists {served})"
    return None
