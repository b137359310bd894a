"""The one upload reader: the ASGI middleware in front of the API routes that reads, parses and checks each upload
once, so that neither BentoML nor the endpoint parses the body again.

BentoML's own request parsing turns malformed uploads into 500s, downloads a text value of a file field as a URL, and
writes every uploaded file to a temporary file that the endpoint reads back (measured: schemathesis finds 500s
without this reader; its CPU per request: docs/serving.md, Request path). This reader answers instead, before
BentoML sees the request:

* 413 a body over ``max_bytes`` (from Content-Length before reading, else while reading);
* 415 anything but ``multipart/form-data``;
* 400 a malformed multipart body, a missing file field, a text value in it (URLs are never fetched), several files
  on a one-image route (the message names the route that takes several), an option field sent as a file, or a
  query string (options are form fields);
* 413 more files than a route's ``max_files``.

What it read is an :class:`Upload` in the request's ASGI scope (:func:`upload_of`): the files' bytes and the option
fields, JSON-decoded as the OpenAPI document says they are encoded. The endpoints' input spec hands it to them
(``bentoml_workarounds.ReadUpload``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceattr.serve.rejections import Rejected, rejected

#: The ASGI scope key of the request's :class:`Upload`.
SCOPE_KEY = "faceattr.upload"


@dataclass(frozen=True)
class UploadRoute:
    """What one route takes: its file field, its option fields (text), and how many files the field may hold
    (1: exactly one; more: a list, refused past ``max_files``)."""

    file_field: str
    option_fields: tuple[str, ...]
    max_files: int = 1


@dataclass(frozen=True)
class Upload:
    """A checked upload: ``values`` maps the file field to its bytes (a list of them where ``max_files`` > 1) and
    each option field sent to its value."""

    values: dict[str, Any]


def upload_of(scope: Scope) -> Upload:
    """The upload :class:`UploadGuard` read for this request."""
    return scope[SCOPE_KEY]


class UploadGuard:
    """The upload reader for the POST routes of ``routes``; every other request passes through untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int, routes: dict[str, UploadRoute]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        try:
            upload = await self._read(scope, receive, route)
        except Rejected as exc:
            await rejected(exc.status, str(exc))(scope, receive, send)
            return
        if upload is None:  # the client went away
            return
        scope[SCOPE_KEY] = upload
        await self.app(scope, _read_already(receive), send)

    async def _read(self, scope: Scope, receive: Receive, route: UploadRoute) -> Upload | None:
        """The request's upload; Rejected for a bad one; None when the client disconnected while sending."""
        field = route.file_field
        headers = Headers(scope=scope)
        too_large = Rejected(
            413, f"the request body is larger than the limit of {self.max_bytes} bytes (max_request_bytes)"
        )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise too_large
        if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise Rejected(
                415,
                f"send multipart/form-data with the image as file field {field!r}, e.g. {_example(field, scope)}",
            )
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            form = await Request(scope, _replay(b"".join(chunks))).form()
        except Exception as exc:  # noqa: BLE001 - starlette/multipart parse errors
            raise Rejected(400, f"malformed multipart body ({exc})") from None
        try:
            return Upload(await _values(form, route, scope, self._several_images_route()))
        finally:
            await form.close()

    def _several_images_route(self) -> str:
        """Where several images go, for the refusal of several on a one-image route: ``/predict_batch (field
        images)``, the first route whose field takes more than one file (empty: none)."""
        for path, route in self.routes.items():
            if route.max_files > 1:
                return (
                    f"{path} (field {route.file_field}, e.g. curl -F {route.file_field}=@a.jpg -F "
                    f"{route.file_field}=@b.jpg http://HOST{path})"
                )
        return ""


def _query(scope: Scope) -> str:
    """The query string's parameter names, for the rejection of a query string (empty: none)."""
    if not scope.get("query_string"):
        return ""
    return ", ".join(sorted(Request(scope).query_params.keys()))


def _example(field: str, scope: Scope, options: str = "") -> str:
    """The curl command of a well-formed request to this route, for the messages."""
    return f"curl -F {field}=@photo.jpg{options} http://HOST{scope['path']}"


async def _values(form: FormData, route: UploadRoute, scope: Scope, several: str) -> dict[str, Any]:
    """The checked fields of the form parsed from the request of ``scope`` (see :class:`UploadGuard`); Rejected
    otherwise. ``several``: the route that takes several images, for the refusal of several here."""
    field = route.file_field
    example = _example(field, scope)
    files = form.getlist(field)
    if not files:
        raise Rejected(400, f"missing multipart file field {field!r}, e.g. {example}")
    if any(not isinstance(value, UploadFile) for value in files):
        raise Rejected(
            400, f"field {field!r} must be a file upload, not a text value (URLs are not fetched), e.g. {example}"
        )
    if route.max_files == 1 and len(files) > 1:
        elsewhere = f"; send several images to {several}" if several else ""
        raise Rejected(
            400, f"{len(files)} files in field {field!r}: {scope['path']} takes one image per request{elsewhere}"
        )
    if len(files) > route.max_files:
        raise Rejected(
            413,
            f"{len(files)} images in one request; the limit is {route.max_files} (max_images_per_request)",
        )
    options = {name: form[name] for name in route.option_fields if name in form}
    if any(not isinstance(value, str) for value in options.values()):
        raise Rejected(400, f"the fields {', '.join(route.option_fields)} are text values, not files")
    query = _query(scope)
    if query:
        raise Rejected(
            400,
            f"query parameters are not read ({query}): send options as multipart form fields beside the image, "
            f"e.g. {_example(field, scope, ' -F face=detect')}",
        )
    data = [await upload.read() for upload in files]  # in memory: starlette spools a file to disk only past 1 MiB
    return {field: data if route.max_files > 1 else data[0], **{k: _json_or_text(v) for k, v in options.items()}}


def _json_or_text(value: str) -> Any:
    """A form value as the OpenAPI document encodes it (JSON: what BentoML's clients send), else the text itself."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _replay(body: bytes) -> Receive:
    """An ASGI ``receive`` that gives ``body`` in one message, then a disconnect (for the form parser)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _read_already(receive: Receive) -> Receive:
    """The ``receive`` of the app behind the reader: the body (read already) as empty, then the client's own
    messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return replay
