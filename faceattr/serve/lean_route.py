"""``POST /lean/predict``: ``/predict``'s answer for less CPU per request, mounted beside the BentoML API.

BentoML's ``/predict`` spends most of the API process's CPU per image on its request pipeline, not on the image:
the upload guard parses the multipart body to check it, BentoML parses it again, writes the file to a temporary
file, validates the form fields with pydantic, and the endpoint reads the file back (BENCHMARKS.md, Serving). This
route is a plain Starlette app mounted into the same Bento with BentoML's documented ``bentoml.asgi_app``: it reads
the body once (bounded by ``max_request_bytes``), parses the multipart form once in memory, and hands the bytes to
the very code ``/predict`` runs (the service's decoding threads and budget, face detection, batching, thresholds,
answer). BentoML's server around it stays: ``/metrics`` counts its requests, ``/readyz``, the request timeout and
the API workers are the same, and ``/predict`` with its OpenAPI schema is unchanged.

The request and the answer are ``/predict``'s: multipart file field ``image``, optional form fields ``face``
(center | detect) and ``faces`` (largest | all); the same JSON, the same 4xx/503 answers for the same problems.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import bentoml
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from faceattr.serve.face_finding import face_options
from faceattr.serve.rejections import Rejected, rejected

if TYPE_CHECKING:
    from faceattr.serve.service import FaceAttr

#: Where the app is mounted, and its route.
MOUNT_PATH = "/lean"
ROUTE = "/predict"
FILE_FIELD = "image"
OPTION_FIELDS = ("face", "faces")


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request body, or Rejected(413) past ``max_bytes`` (Content-Length before reading, else while reading)."""
    too_large = Rejected(413, f"the request body is larger than the limit of {max_bytes} bytes (max_request_bytes)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload(request: Request, service: FaceAttr) -> tuple[bytes, dict[str, str]]:
    """The image's bytes and the option fields of a multipart request; Rejected (400, 413, 415) otherwise."""
    example = f"curl -F {FILE_FIELD}=@photo.jpg http://HOST{MOUNT_PATH}{ROUTE}"
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise Rejected(415, f"send multipart/form-data with the image as file field {FILE_FIELD!r}, e.g. {example}")
    if request.query_params:
        raise Rejected(
            400,
            f"query parameters are not read ({', '.join(sorted(request.query_params))}): send options as multipart "
            f"form fields beside the image, e.g. curl -F image=@photo.jpg -F face=detect http://HOST{MOUNT_PATH}{ROUTE}",
        )
    body = await _body(request, service.config.max_request_bytes)

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=len(OPTION_FIELDS))
    except Exception as exc:  # noqa: BLE001 - starlette/multipart parse errors, too many parts
        raise Rejected(400, f"malformed multipart body ({exc})") from None
    try:
        upload = form.get(FILE_FIELD)
        if upload is None:
            raise Rejected(400, f"missing multipart file field {FILE_FIELD!r}, e.g. {example}")
        if not isinstance(upload, UploadFile):
            raise Rejected(
                400,
                f"field {FILE_FIELD!r} must be a file upload, not a text value (URLs are not fetched), e.g. {example}",
            )
        options = {name: form[name] for name in OPTION_FIELDS if name in form}
        if any(not isinstance(value, str) for value in options.values()):
            raise Rejected(400, f"the fields {', '.join(OPTION_FIELDS)} are text values, not files")
        return await upload.read(), options  # in memory: starlette spools uploads to disk only past 1 MiB
    finally:
        await form.close()


async def predict(request: Request) -> Response:
    service: FaceAttr = bentoml.get_current_service()
    try:
        data, fields = await _upload(request, service)
        try:
            options = face_options(fields.get("face", service.config.face), fields.get("faces", "largest"))
        except ValueError as exc:
            raise Rejected(400, str(exc)) from None
    except Rejected as exc:
        return rejected(exc.status, str(exc))
    return await service.answer_photo(lambda: service.prepare_bytes(data, options), options)


#: The app ``service.py`` mounts at :data:`MOUNT_PATH`.
app = Starlette(routes=[Route(ROUTE, predict, methods=["POST"])])
