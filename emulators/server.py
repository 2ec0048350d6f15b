"""One aiohttp server hosting N emulated nodes of one flavour (Ollama or vLLM).

Node `i` answers under `/nodes/<i>/...`; with a single node it also answers at the root. There
is one aiohttp application with a single catch-all route: the prefix is parsed here and the
node's flavour routing table is consulted, so thousands of nodes cost one small state object
each. Every request is counted per node (`"<METHOD> <path>"`) and faults are applied before and
after the flavour's handler. The admin API lives beside the emulated one:

- `GET  [/nodes/<i>]/_emulator/state`   node state (all nodes at the root)
- `POST [/nodes/<i>]/_emulator/state`   flavour-specific changes (`Node.patch`)
- `POST [/nodes/<i>]/_emulator/faults`  arm a fault: `{"kind", "endpoint"?, "times"?, ...}`
- `DELETE [/nodes/<i>]/_emulator/faults`  disarm (optionally `?endpoint=/api/pull`)
- `POST [/nodes/<i>]/_emulator/reset`   back to the initial state, counters and faults cleared

At the root, POST faults/state/reset apply to every node unless the body names `"node": i`.
Imports nothing of the controller; the flavour modules build on this one.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from emulators import faults

ADMIN = "/_emulator"


class Node:
    """State shared by every emulated node: its index, faults and request counts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.faults = faults.FaultTable()
        self.requests: collections.Counter[str] = collections.Counter()

    def state(self) -> dict[str, Any]:
        """JSON-ready view for `GET /_emulator/state`; flavours extend it."""
        return {
            "index": self.index,
            "requests": dict(self.requests),
            "faults": self.faults.to_dict(),
        }

    def patch(self, changes: Mapping[str, Any]) -> None:
        """Apply `POST /_emulator/state`; flavours override. Raises ValueError when invalid."""
        if changes:
            raise ValueError(f"unknown state fields: {sorted(changes)}")

    def reset(self) -> None:
        """Return to the initial state; flavours extend it."""
        self.faults.clear()
        self.requests.clear()

    async def close(self) -> None:
        """Stop background work (downloads); called when the server stops."""


N = TypeVar("N", bound=Node)


@dataclasses.dataclass
class Call(Generic[N]):
    """One request routed to a node: `path` has the `/nodes/<i>` prefix removed."""

    request: web.Request
    node: N
    path: str
    hits: list[faults.Fault]


Handler = Callable[[Call[N]], Awaitable[web.StreamResponse]]


class Flavour(Protocol[N]):
    """What a server flavour supplies: routes, and the error bodies of its framework."""

    name: str

    def routes(self, node: N, path: str) -> Mapping[str, Handler[N]] | None:
        """Handlers by HTTP method for `path` on `node`, or None for an unknown route."""
        ...

    def refuse(self, node: N, request: web.Request, path: str) -> web.Response | None:
        """An early answer (e.g. 401 without the API key), or None to go on."""
        ...

    def not_found(self) -> web.Response: ...

    def method_not_allowed(self) -> web.Response: ...

    def internal_error(self, node: N, status: int, path: str) -> web.Response:
        """The flavour's error body for an injected `status` (500, 503 or 429) on `path`."""
        ...


def json_response(obj: Any, status: int = 200) -> web.Response:
    """Compact JSON with the `application/json; charset=utf-8` content type."""
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


class Host(Generic[N]):
    """Routes requests to nodes and runs the admin API. Owns no sockets."""

    def __init__(self, flavour: Flavour[N], nodes: Sequence[N]) -> None:
        self.flavour = flavour
        self.nodes = list(nodes)
        self.app = web.Application(client_max_size=64 * 1024**2)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        located = self._locate(request.path)
        if located is None:
            return self.flavour.not_found()
        node, path = located
        if path == ADMIN or path.startswith(ADMIN + "/"):
            return await self._admin(request, node, path.removeprefix(ADMIN))
        if node is None:
            return self.flavour.not_found()
        node.requests[f"{request.method} {path}"] += 1
        refusal = self.flavour.refuse(node, request, path)
        if refusal is not None:
            return refusal
        methods = self.flavour.routes(node, path)
        if methods is None:
            return self.flavour.not_found()
        handler = methods.get(request.method)
        if handler is None:
            return self.flavour.method_not_allowed()
        return await self._call(handler, Call(request, node, path, node.faults.take(path)))

    async def _call(self, handler: Handler[N], call: Call[N]) -> web.StreamResponse:
        kinds = {hit.kind: hit for hit in call.hits}
        if latency := kinds.get(faults.FaultKind.LATENCY):
            await asyncio.sleep(latency.latency)
        if faults.FaultKind.HANG in kinds:
            await asyncio.Event().wait()  # until the client leaves or the server stops
        if failure := next((hit for hit in call.hits if hit.kind in faults.STATUS), None):
            return self._failure(call, failure)
        response = await handler(call)
        if response.prepared or not isinstance(response, web.Response):
            return response  # streamed: `streams.LineStream` applied the faults
        if faults.FaultKind.RESET in kinds and call.request.transport is not None:
            call.request.transport.abort()
            return response
        body = response.body if isinstance(response.body, bytes) else b""
        if faults.FaultKind.MALFORMED in kinds:
            response.body = faults.malformed(body)
        if oversized := kinds.get(faults.FaultKind.OVERSIZED):
            response.body = faults.oversized(body, oversized.size)
        return response

    def _failure(self, call: Call[N], fault: faults.Fault) -> web.Response:
        response = self.flavour.internal_error(call.node, faults.STATUS[fault.kind], call.path)
        if fault.kind == faults.FaultKind.HTTP_429:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    def _locate(self, path: str) -> tuple[N | None, str] | None:
        """(node, path inside it); node None means the root admin scope."""
        if path.startswith("/nodes/"):
            index_text, _, rest = path[len("/nodes/") :].partition("/")
            if not index_text.isdigit() or int(index_text) >= len(self.nodes):
                return None
            return self.nodes[int(index_text)], "/" + rest
        if len(self.nodes) == 1 and not path.startswith(ADMIN):
            return self.nodes[0], path
        return None, path

    async def _admin(self, request: web.Request, node: N | None, action: str) -> web.Response:
        try:
            body = await _json_body(request)
            targets = self._targets(node, body)
            return self._admin_action(request.method, action, targets, body, request.query)
        except (ValueError, TypeError, KeyError) as exc:
            return json_response({"error": str(exc)}, status=400)

    def _admin_action(
        self,
        method: str,
        action: str,
        targets: list[N],
        body: dict[str, Any],
        query: Mapping[str, str],
    ) -> web.Response:
        key = (method, action)
        if key == ("GET", "/state"):
            return json_response({"flavour": self.flavour.name, "nodes": self._states(targets)})
        if key == ("POST", "/state"):
            for target in targets:
                target.patch({k: v for k, v in body.items() if k != "node"})
        elif key == ("POST", "/faults"):
            fault = faults.Fault.from_dict(body)
            for target in targets:
                target.faults.set(fault, body.get("endpoint", faults.ALL_ENDPOINTS))
        elif key == ("DELETE", "/faults"):
            for target in targets:
                target.faults.clear(query.get("endpoint"))
        elif key == ("POST", "/reset"):
            for target in targets:
                target.reset()
        else:
            return json_response({"error": f"no admin action {method} {action}"}, status=404)
        return json_response({"flavour": self.flavour.name, "nodes": self._states(targets)})

    def _targets(self, node: N | None, body: Mapping[str, Any]) -> list[N]:
        if node is not None:
            return [node]
        if "node" in body:
            return [self.nodes[int(body["node"])]]
        return self.nodes

    @staticmethod
    def _states(targets: list[N]) -> list[dict[str, Any]]:
        return [target.state() for target in targets]

    async def close(self) -> None:
        """Stop every node's background work."""
        await asyncio.gather(*(node.close() for node in self.nodes))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    data = json.loads(await request.read() or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the admin body must be a JSON object")
    return data
