"""The registry side of the Ollama emulator: `GET /v2/<namespace>/<model>/manifests/<tag>`.

Serves the manifest of each catalog model as the Ollama registry does (PROTOCOLS C.2): schema
2, the config blob, and the layers with Ollama's media types (the first layer is the model,
then template, license, params, system), sizes and digests from `emulators.catalog`, so a
client can size a model before pulling it (Σ `layers[].size` + `config.size`). An unknown model
gets 404 with the registry's error body. Routed by `emulators.ollama.Flavour`; imports nothing
of the controller.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from emulators import catalog, names, ollama_node, server

MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
_LAYER_TYPES = ("model", "template", "license", "params", "system")
PATH = re.compile(r"^/v2/(?P<ns>[^/]+)/(?P<model>[^/]+)/manifests/(?P<tag>[^/]+)$")


def manifest(spec: catalog.ModelSpec) -> dict[str, object]:
    """The registry manifest of ``spec``: its blobs, the last one being the config."""
    *layers, config = spec.blobs
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
        "layers": [
            {
                "mediaType": f"application/vnd.ollama.image.{_LAYER_TYPES[min(i, 4)]}",
                "digest": blob.digest,
                "size": blob.size,
            }
            for i, blob in enumerate(layers)
        ],
    }


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
    body = json.dumps(manifest(spec), separators=(",", ":")).encode()
    return web.Response(body=body, content_type=MEDIA_TYPE)
