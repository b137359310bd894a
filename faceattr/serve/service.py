"""The BentoML service: ``bentoml serve`` from the repo root (``bentofile.yaml`` names ``FaceAttr``).

``FaceAttr`` is the HTTP API: ``POST /predict`` (multipart field ``image``) and ``POST /predict_batch`` (multipart
field ``images``, repeated). It checks, decodes and preprocesses uploads in a thread pool, concurrently, runs the
model on uint8 batches and turns probabilities into JSON. Where the model runs is ``runner`` (conf/serve):

* ``inline`` (default): in each API worker process, on a dedicated thread, behind adaptive batching
  (``faceattr/serve/batching.py``): the requests waiting when the model becomes free are merged into one call of up
  to ``max_batch_size`` images. No second hop per image: the fastest on CPU (BENCHMARKS.md, Serving).
* ``service``: in ``FaceAttrModel``, a second BentoML service (its own process(es), ``model_workers``) with one
  batchable endpoint ``infer``, which BentoML's adaptive batching feeds; the API calls it over BentoML's
  inter-service HTTP. For several API workers sharing one GPU model, or scaling the two independently.

Settings come from ``conf/serve/*.yaml`` and ``FACEATTR_SERVE_*`` variables (``faceattr/serve/config.py``). With no
model in the store the import fails with one line (exit status 2) saying to run ``export.py``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import sys
import time
from pathlib import Path

import aiohttp
import anyio.to_thread
import bentoml
import numpy as np
import torch
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from faceattr.serve.batching import InlineBatcher, Overloaded
from faceattr.serve.config import ServeConfig, ServeConfigError, load_serve_config
from faceattr.serve.images import ImageError, load_and_preprocess
from faceattr.serve.runtime import ModelError, ModelInfo, Predictor, pick_device, resolve_model, served_format


def _startup() -> tuple[ServeConfig, ModelInfo]:
    try:
        config = load_serve_config()
        model = resolve_model(config)
        device = pick_device(config.device)
        config = dataclasses.replace(config, format=served_format(config, model, device)).for_device(device)
        model.artefact(config.format)  # the chosen format exists
        return config, model
    except (ServeConfigError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


CONFIG, MODEL = _startup()

# Custom Prometheus metrics (on /metrics next to BentoML's own, e.g. bentoml_service_adaptive_batch_size).
MODEL_BATCH_SIZE = bentoml.metrics.Histogram(
    name="faceattr_model_batch_size",
    documentation="Images per model call (after adaptive batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="faceattr_model_seconds",
    documentation="Seconds per model call",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
IMAGES = bentoml.metrics.Counter(
    name="faceattr_images",
    documentation="API outcomes: outcome=ok counts images answered; outcome=<HTTP status> counts rejected requests",
    labelnames=["outcome"],
)


class Prediction(BaseModel):
    """One image's result."""

    model: str = Field(description="BentoML tag of the model that answered")
    attributes: dict[str, float] = Field(description="probability of each attribute, in the model's order")
    present: list[str] = Field(description="attributes whose probability is >= their threshold")


class ImagePrediction(BaseModel):
    attributes: dict[str, float] = Field(description="probability of each attribute, in the model's order")
    present: list[str] = Field(description="attributes whose probability is >= their threshold")


class BatchPrediction(BaseModel):
    model: str
    predictions: list[ImagePrediction] = Field(description="one per image, in the order sent")


class Rejected(Exception):
    """A request answered with an error status and message instead of a prediction."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    """The JSON error body every rejection uses: ``{"error": "..."}``."""
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class UploadGuard:
    """ASGI middleware in front of the API routes: rejects what BentoML's own parsing would turn into a 500 or act on.

    * 413 for a body over ``max_bytes`` (from Content-Length before reading, else while reading);
    * 415 for anything but ``multipart/form-data``;
    * 400 for a malformed multipart body, a missing file field, or a text value in it (BentoML would try to
      download a text value as a URL; this service never fetches URLs).

    The body is read once (bounded by ``max_bytes``), checked, and replayed to the app.
    """

    def __init__(self, app, max_bytes: int, file_fields: dict[str, str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.file_fields = file_fields

    async def _reject(self, scope, receive, send, status: int, message: str) -> None:
        IMAGES.labels(outcome=str(status)).inc()
        await error_response(status, message)(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        field = self.file_fields.get(scope.get("path", "")) if scope["type"] == "http" else None
        if field is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        too_large = f"the request body is larger than the limit of {self.max_bytes} bytes (max_request_bytes)"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send, 413, too_large)
            return
        example = f"curl -F {field}=@photo.jpg http://HOST{scope['path']}"
        if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
            await self._reject(scope, receive, send, 415,
                               f"send multipart/form-data with the image as file field {field!r}, e.g. {example}")
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reject(scope, receive, send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)

        def replay():
            sent = False

            async def receive_body():
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            return receive_body

        try:
            form = await Request(scope, replay()).form()
        except Exception as exc:  # noqa: BLE001 - starlette/multipart parse errors
            await self._reject(scope, receive, send, 400, f"malformed multipart body ({exc})")
            return
        try:
            values = form.getlist(field)
            if not values:
                await self._reject(scope, receive, send, 400, f"missing multipart file field {field!r}, e.g. {example}")
                return
            if any(isinstance(value, str) for value in values):
                await self._reject(scope, receive, send, 400, f"field {field!r} must be a file upload, not a text "
                                   f"value (URLs are not fetched), e.g. {example}")
                return
        finally:
            await form.close()
        await self.app(scope, replay(), send)


@bentoml.service(
    name="FaceAttrModel",
    workers=CONFIG.model_workers,
    traffic={"timeout": CONFIG.timeout_s},
    logging={"access": {"enabled": CONFIG.access_log}},
)
class FaceAttrModel:
    """Runs the exported model; concurrent calls are merged by adaptive batching."""

    # A model reference: `bentoml build` packages this exact version into the Bento.
    bento_model = bentoml.models.BentoModel(MODEL.tag)

    def __init__(self) -> None:
        self.predictor = _ready_predictor()

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=CONFIG.max_batch_size,
                 max_latency_ms=CONFIG.max_latency_ms)
    def infer(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 3, h, w) at the model's input size -> float32 probabilities (N, A)."""
        started = time.perf_counter()
        probabilities = self.predictor(images)
        _observe_model_call(len(images), time.perf_counter() - started)
        return probabilities


def _ready_predictor() -> Predictor:
    """The model, loaded and warmed up (TorchScript's profiling executor optimizes over the first calls)."""
    predictor = Predictor(MODEL, CONFIG)
    h, w = MODEL.image_size
    for size in (1, 2, 1, 2):
        predictor(np.zeros((size, 3, h, w), dtype=np.uint8))
    print(f"faceattr model {MODEL.tag} ({CONFIG.format} on {predictor.device}) ready; {CONFIG.describe()}",
          flush=True)
    return predictor


def _observe_model_call(images: int, seconds: float) -> None:
    MODEL_SECONDS.observe(seconds)
    MODEL_BATCH_SIZE.observe(images)


def _inline_batcher() -> InlineBatcher:
    """The model in this process, on its own thread, behind adaptive batching (``faceattr/serve/batching.py``)."""
    return InlineBatcher(_ready_predictor, CONFIG.max_batch_size, CONFIG.max_latency_ms, observe=_observe_model_call)


@bentoml.service(
    name="FaceAttr",
    workers=CONFIG.api_workers,
    traffic={"timeout": CONFIG.timeout_s},
    logging={"access": {"enabled": CONFIG.access_log}},
)
class FaceAttr:
    """Face attributes of photos: 40 CelebA attribute probabilities and those present, per image."""

    if CONFIG.runner == "service":  # the model in its own process(es); `bentoml serve` starts it
        model_service = bentoml.depends(FaceAttrModel)
    bento_model = bentoml.models.BentoModel(MODEL.tag)

    def __init__(self) -> None:
        self.tag = MODEL.tag
        self.attributes = list(MODEL.attributes)
        self.thresholds = MODEL.thresholds_for(CONFIG).tolist()
        self.limits = CONFIG.decoding_limits()  # one decoding budget for all requests of this process
        self.limits.budget.on_release = _return_freed_memory_after_large_images
        self._decoders = anyio.CapacityLimiter(CONFIG.decode_threads)  # uploads decoded at once
        if CONFIG.runner == "inline":
            self.batcher = _inline_batcher()
        else:
            self.batcher = None
            _keep_model_connections(self.model_service)
            # Requests are preprocessed in parallel threads; one torch thread each avoids oversubscribing the cores.
            torch.set_num_threads(1)

    def _load(self, path: Path) -> np.ndarray:
        """Read, check, decode and preprocess one upload (on a worker thread)."""
        return load_and_preprocess(Path(path).read_bytes(), MODEL.image_size, MODEL.crop, self.limits).numpy()

    async def _prepare(self, path: Path) -> np.ndarray:
        """One upload as a model input, prepared in a worker thread (concurrently with other requests and with the
        model); raises Rejected for a bad upload."""
        if not _is_upload(path):
            raise Rejected(400, "send the image as a multipart file upload")
        try:
            return await anyio.to_thread.run_sync(self._load, path, limiter=self._decoders)
        except ImageError as exc:
            raise Rejected(exc.status, str(exc)) from None

    async def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities from the model: in this process (``runner: inline``) or from the model service
        (inference is idempotent: a dropped connection to it is retried)."""
        if self.batcher is not None:
            try:
                return await self.batcher(batch)
            except Overloaded as exc:
                raise Rejected(503, str(exc)) from None
        for attempt in range(CONNECTION_ATTEMPTS):
            try:
                return await self.model_service.to_async.infer(batch)
            except aiohttp.ClientConnectionError:
                if attempt + 1 == CONNECTION_ATTEMPTS:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
            except BentoMLException as exc:
                if int(getattr(exc, "error_code", 500)) == 503:
                    raise Rejected(503, "the model is overloaded (requests would wait longer than max_latency_ms); "
                                   "retry shortly") from None
                raise
        raise AssertionError("unreachable")

    def _result(self, probabilities: np.ndarray) -> dict:
        """``{"attributes": {name: probability}, "present": [names]}`` of one image."""
        rounded = np.round(probabilities.astype(np.float64), CONFIG.decimals).tolist()
        return {
            "attributes": dict(zip(self.attributes, rounded)),
            "present": [name for name, p, t in zip(self.attributes, probabilities.tolist(), self.thresholds) if p >= t],
        }

    @bentoml.api(route="/predict")
    async def predict(self, image: Path) -> Prediction:
        """Attribute probabilities of one photo: multipart field `image` (JPEG, PNG or WebP, any size). A portrait
        with the face roughly centred works best: it is centre-cropped like CelebA's aligned faces."""
        try:
            probabilities = await self._infer((await self._prepare(image))[None])
        except Rejected as exc:
            return rejected(exc.status, str(exc))
        IMAGES.labels(outcome="ok").inc()
        # The documented Prediction, serialized directly (BentoML would validate it field by field again).
        return JSONResponse({"model": self.tag, **self._result(probabilities[0])})

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, images: list[Path]) -> BatchPrediction:
        """Attribute probabilities of several photos in one call: multipart field `images`, repeated (at most
        max_images_per_request). One bad image rejects the whole request; the error names its position."""
        if len(images) > CONFIG.max_images_per_request:
            return rejected(413, f"{len(images)} images in one request; the limit is "
                                 f"{CONFIG.max_images_per_request} (max_images_per_request)")
        prepared = await asyncio.gather(*(self._prepare(path) for path in images), return_exceptions=True)
        for index, item in enumerate(prepared):
            if isinstance(item, Rejected):
                return rejected(item.status, f"image {index} (0-based, in the order sent): {item}")
            if isinstance(item, BaseException):
                raise item
        try:
            probabilities = await self._infer(np.stack(prepared))
        except Rejected as exc:
            return rejected(exc.status, str(exc))
        IMAGES.labels(outcome="ok").inc(len(prepared))
        return JSONResponse({"model": self.tag, "predictions": [self._result(row) for row in probabilities]})


CONNECTION_ATTEMPTS = 3


def _keep_model_connections(proxy) -> None:
    """Work around BentoML 1.4.40's inter-service client, which replaces its HTTP session every 100 requests (or
    300 s) by closing the old one, killing the requests still in flight on it ("Cannot write to closing
    transport", a 500 under concurrent load). Keep one session for the life of the process instead."""
    manager = getattr(getattr(proxy, "to_async", None), "_session_manager", None)
    if manager is not None and hasattr(manager, "max_requests") and hasattr(manager, "max_age"):
        manager.max_requests = float("inf")
        manager.max_age = float("inf")


#: Decodes of at least this many pixels (3 MB of RGB and more) are followed by a heap trim.
TRIM_AFTER_PIXELS = 1_000_000
_LIBC = ctypes.util.find_library("c")


def _return_freed_memory_after_large_images(pixels: int) -> bool:
    """After decoding a large image, hand the heap memory that decoding freed back to the OS (glibc ``malloc_trim``).

    glibc's malloc keeps freed memory for reuse; Pillow's 16 MiB image blocks come from per-thread heap arenas,
    and without a trim the API process's RSS grows with every decoding thread that ever held a large image
    (measured with 8 concurrent 49-megapixel WebPs, two decoded at a time: the worker went from 1058 to 4054 MiB
    and kept it without a trim, and kept +16 to +92 MiB with one). A trim after the rare large image keeps that
    bound without changing how the model allocates: the earlier fix, a 1 MiB ``M_MMAP_THRESHOLD`` for the whole
    process, made every activation of a batch an mmap/munmap and the in-process model ~45% slower. Without
    glibc this does nothing.
    """
    if pixels < TRIM_AFTER_PIXELS or _LIBC is None:
        return False
    try:
        return bool(ctypes.CDLL(_LIBC).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _is_upload(path: Path) -> bool:
    """True for a file BentoML wrote for this request (never a path named by the client)."""
    from bentoml._internal.context import request_temp_dir

    try:
        return Path(path).resolve().is_relative_to(Path(request_temp_dir()).resolve())
    except (OSError, RuntimeError, LookupError, TypeError, ValueError):  # fail closed: not an upload
        return False


def rejected(status: int, message: str):
    """Count a rejected request and answer it with ``{"error": message}`` (returned in place of the model)."""
    IMAGES.labels(outcome=str(status)).inc()
    return error_response(status, message)


FaceAttr.add_asgi_middleware(
    UploadGuard, max_bytes=CONFIG.max_request_bytes, file_fields={"/predict": "image", "/predict_batch": "images"}
)
