"""The ASGI middleware in front of the API routes: it answers what BentoML's own request parsing would turn into a
500 or act on (measured: schemathesis finds 500s without it; docs/serving.md, Reliability)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceattr.serve.rejections import rejected


class UploadGuard:
    """Rejects, before BentoML sees the request:

    * 413 a body over ``max_bytes`` (from Content-Length before reading, else while reading);
    * 415 anything but ``multipart/form-data``;
    * 400 a malformed multipart body, a missing file field, or a text value in it (BentoML would try to download a
      text value as a URL; this service never fetches URLs).

    ``file_fields`` maps each guarded route to its file field. The body is read once (bounded by ``max_bytes``),
    checked, and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, file_fields: dict[str, str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.file_fields = file_fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        field = self.file_fields.get(scope.get("path", "")) if scope["type"] == "http" else None
        if field is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return

        async def reject(status: int, message: str) -> None:
            await rejected(status, message)(scope, receive, send)

        headers = Headers(scope=scope)
        too_large = f"the request body is larger than the limit of {self.max_bytes} bytes (max_request_bytes)"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await reject(413, too_large)
            return
        example = f"curl -F {field}=@photo.jpg http://HOST{scope['path']}"
        if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
            await reject(415, f"send multipart/form-data with the image as file field {field!r}, e.g. {example}")
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await reject(413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            form = await Request(scope, _replay(body)).form()
        except Exception as exc:  # noqa: BLE001 - starlette/multipart parse errors
            await reject(400, f"malformed multipart body ({exc})")
            return
        try:
            values = form.getlist(field)
            if not values:
                await reject(400, f"missing multipart file field {field!r}, e.g. {example}")
                return
            if any(isinstance(value, str) for value in values):
                await reject(
                    400,
                    f"field {field!r} must be a file upload, not a text value (URLs are not fetched), e.g. {example}",
                )
                return
        finally:
            await form.close()
        await self.app(scope, _replay(body), send)


def _replay(body: bytes) -> Receive:
    """An ASGI ``receive`` that gives ``body`` in one message, then a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
