"""Where the service depends on how BentoML behaves beyond its documented API, or works around that behaviour.

Each item was written for, and is checked against, BentoML 1.4.40, the version that pyproject.toml and
bentofile.yaml pin: tests/test_bentoml_workarounds.py pins that version and fails when BentoML stops behaving as
described here, so that a BentoML upgrade starts with a look at this module. Nothing else in ``faceattr/`` reads
BentoML's internals (``tests/test_imports.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import bentoml
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceattr.serve.upload_guard import upload_of

BENTOML_VERSION = "1.4.40"

#: The ``runner_connection`` setting of the model service (``runner: service``). BentoML's inter-service client
#: replaces its HTTP session every ``max_requests`` requests (default 100) or ``max_age`` seconds (default 300) by
#: closing the old one, which kills the requests still in flight on it ("Cannot write to closing transport", a 500
#: under concurrent load). These values keep one session for the life of the API process.
KEEP_MODEL_CONNECTION = {"max_requests": 2**62, "max_age": 1e12}


class ReadUpload(bentoml.IODescriptor):
    """The input spec (``@bentoml.api(input_spec=...)``) of an endpoint whose upload the upload reader has read
    (``upload_guard.py``): its fields document the request (a file field typed ``Path`` is what makes BentoML
    document and send it as a multipart file, ``bentoml.SyncHTTPClient`` included), and BentoML builds the endpoint's
    arguments from the reader's :class:`~faceattr.serve.upload_guard.Upload` instead of parsing the body a second
    time: the file field holds the upload's bytes (a list of them for a list field), each option its value or
    default.

    Relies on BentoML building an endpoint's arguments with the input spec's ``from_http_request(request, serde)``
    classmethod, and reading them back as the model's fields (``_bentoml_impl/server/app.py``, ``api_endpoint``).
    The values are taken as the reader checked them, without pydantic validation (``model_construct``).
    """

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> ReadUpload:
        return cls.model_construct(**upload_of(request.scope).values)


class OpenAPI3Document:
    """ASGI middleware that serves BentoML's OpenAPI document (``GET /docs.json``) as valid OpenAPI 3.0.

    BentoML declares ``openapi: 3.0.2`` but writes pydantic's JSON Schema: ``"type": "file"`` for an upload (OpenAPI
    2 only; 3.0 writes ``type: string, format: binary``) and ``{"type": "null"}`` in an ``anyOf`` for an optional
    value (3.0 writes ``nullable: true``), so ``openapi-spec-validator`` and client generators reject it. The
    document is rewritten by :func:`openapi3`, then by ``amend`` (the service's own description and routes that are
    not BentoML APIs: ``pages.describe_service``), once per process: it does not change. ``/schema.json``, which
    BentoML's own clients read, keeps BentoML's spelling.

    Relies on BentoML's Swagger UI (``/``) rendering this document: its landing text is the document's ``info``
    (BentoML's own README there, ``bentoml/_internal/bento/bento.py``'s ``get_default_svc_readme``, or a Bento's
    ``description``: ``_bentoml_sdk/service/openapi.py``, ``generate_spec``).
    """

    def __init__(
        self, app: ASGIApp, path: str = "/docs.json", amend: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ) -> None:
        self.app = app
        self.path = path
        self.amend = amend
        self.document: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if self.document is None:
            start: dict[str, Any] = {}
            chunks: list[bytes] = []

            async def keep(message: Message) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            await self.app({**scope, "method": "GET"}, receive, keep)
            if start.get("status") != 200:  # not the document: passed on as it is
                await self.app(scope, receive, send)
                return
            document = openapi3(json.loads(b"".join(chunks)))
            self.document = json.dumps(self.amend(document) if self.amend else document).encode()
        body = self.document
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def openapi3(node: Any) -> Any:
    """An OpenAPI document (or any part of one) with pydantic's JSON Schema spellings that OpenAPI 3.0 lacks
    rewritten: ``type: file`` as ``type: string, format: binary`` (without BentoML's ``content_type``/``pil``
    extras), ``anyOf``/``oneOf`` with ``{"type": "null"}`` and a ``null`` default as ``nullable: true``, ``const`` as a
    one-value ``enum``."""
    if isinstance(node, list):
        return [openapi3(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {
        key: {name: openapi3(schema) for name, schema in value.items()}  # field names, not schema keywords
        if key == "properties" and isinstance(value, dict)
        else openapi3(value)
        for key, value in node.items()
    }
    if node.get("type") == "file":
        node = {k: v for k, v in node.items() if k not in ("content_type", "pil")}
        node.update(type="string", format="binary")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if not isinstance(options, list) or {"type": "null"} not in options:
            continue
        rest = [option for option in options if option != {"type": "null"}]
        node.pop(key)
        node["nullable"] = True
        if len(rest) > 1:
            node[key] = rest
        elif rest and "$ref" in rest[0]:
            node["allOf"] = rest  # OpenAPI 3.0 ignores the siblings of a $ref
        elif rest:
            node = {**rest[0], **node}
    if "default" in node and node["default"] is None:
        node["nullable"] = True  # BentoML's flattening of a request or answer drops the null of an optional field
    return node
