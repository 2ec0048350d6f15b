"""The registry side of the Ollama emulator: `GET /v2/<namespace>/<model>/manifests/<tag>`.

Serves the manifest of each catalog model as the Ollama registry does (PROTOCOLS C.2): schema
2, the config blob, and the layers with Ollama's media types (the first layer is the model,
then template, license, params, system), sizes and digests from `emulators.catalog`, so a
client can size a model before pulling it (Σ `layers[].size` + `config.size`), with its digest
(the sha256 of the body, what `/api/tags` lists once pulled) in `Docker-Content-Digest`; after
`Catalog.publish` the tag's new manifest. An unknown model gets 404 with the registry's error
body. Routed by `emulators.ollama.Flavour`; imports nothing
of the controller.
"""

from __future__ import annotations

import re

from aiohttp import web

from emulators import catalog, names, ollama_node, server

MEDIA_TYPE = catalog.MEDIA_TYPE
PATH = re.compile(r"^/v2/(?P<ns>[^/]+)/(?P<model>[^/]+)/manifests/(?P<tag>[^/]+)$")


def manifest(spec: catalog.ModelSpec) -> dict[str, object]:
    """The registry manifest of ``spec``: its blobs, the last one being the config."""
    return spec.manifest()


async def handle(call: server.Call[ollama_node.OllamaNode]) -> web.StreamResponse:
    """`GET|HEAD /v2/<ns>/<model>/manifests/<tag>` of the node's catalog."""
    found = PATH.match(call.path)
    spec = None
    if found is not None:
        text = f"{found['ns']}/{found['model']}:{found['tag']}"
        if names.is_valid(text):
            spec = call.node.registry.get(names.parse(text))
    if spec is None:
        error = {"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {}}
        return server.json_response({"errors": [error]}, status=404)
    response = web.Response(body=spec.manifest_body, content_type=MEDIA_TYPE)
    response.headers["Docker-Content-Digest"] = f"sha256:{spec.digest}"
    return response
