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

Settings come from ``conf/serve/*.yaml`` and ``FACEATTR_SERVE_*`` variables (``faceattr/serve/config.py``). Around
the API: the upload guard (``upload_guard.py``), the metrics (``metrics.py``), the heap trim after large images
(``heap.py``) and what depends on BentoML's internals (``bentoml_workarounds.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio.to_thread
import bentoml
import numpy as np
import torch
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from faceattr.serve.batching import InlineBatcher, Overloaded
from faceattr.serve.bentoml_workarounds import KEEP_MODEL_CONNECTION, is_upload
from faceattr.serve.config import ServeConfig, ServeConfigError, load_serve_config
from faceattr.serve.heap import return_freed_memory_after_large_images
from faceattr.serve.images import ImageError, load_and_preprocess
from faceattr.serve.metrics import count_answered, observe_model_call
from faceattr.serve.rejections import Rejected, rejected
from faceattr.serve.runtime import ModelError, ModelInfo, Predictor, pick_device, served_model, stored_model
from faceattr.serve.upload_guard import UploadGuard

#: Attempts of a call to the model service (``runner: service``) whose connection dropped (inference is idempotent).
CONNECTION_ATTEMPTS = 3


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A bad setting or model ends the process with one line on stderr and exit status 2."""
    try:
        yield
    except (ServeConfigError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _class_settings() -> tuple[ServeConfig, str]:
    """The settings (API workers made concrete for the device) and the exact tag of the model to serve."""
    with _one_line_errors():
        config = load_serve_config()
        tag = str(stored_model(config).tag)
        return config.for_device(pick_device(config.device)), tag


# The only work at import, because BentoML reads the class definitions below when it imports this module (`bentoml
# serve` before it starts any worker, `bentoml build`, and each worker): the decorators need the settings (workers,
# timeout, batching), and `bento_model` needs the model's exact name:version, which `bentoml build` packages and
# `bentoml serve` resolves before starting workers (pulling from BentoCloud if the local store lacks it). Looking the
# tag up here also makes a missing model one line and exit status 2 before anything starts. The rest (the model's
# metadata, the artefact to run) is checked once by `check_model` before the workers start, and loaded in __init__.
CONFIG, MODEL_TAG = _class_settings()


def _served_model() -> tuple[ServeConfig, ModelInfo]:
    """The settings with the artefact format decided, and the model: the version found at import."""
    return served_model(CONFIG, MODEL_TAG)


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


def _ready_predictor(config: ServeConfig, model: ModelInfo) -> Predictor:
    """The model, loaded and warmed up (TorchScript's profiling executor optimizes over the first calls)."""
    predictor = Predictor(model, config)
    h, w = model.image_size
    for size in (1, 2, 1, 2):
        predictor(np.zeros((size, 3, h, w), dtype=np.uint8))
    print(f"faceattr model {model.tag} ({config.format} on {predictor.device}) ready; {config.describe()}", flush=True)
    return predictor


@bentoml.service(
    name="FaceAttrModel",
    workers=CONFIG.model_workers,
    traffic={"timeout": CONFIG.timeout_s},
    logging={"access": {"enabled": CONFIG.access_log}},
    runner_connection=KEEP_MODEL_CONNECTION,  # read by the API's client of this service
)
class FaceAttrModel:
    """Runs the exported model; concurrent calls are merged by adaptive batching."""

    # A model reference: `bentoml build` packages this exact version into the Bento.
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.predictor = _ready_predictor(*_served_model())

    @bentoml.api(
        batchable=True, batch_dim=0, max_batch_size=CONFIG.max_batch_size, max_latency_ms=CONFIG.max_latency_ms
    )
    def infer(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 3, h, w) at the model's input size -> float32 probabilities (N, A)."""
        started = time.perf_counter()
        probabilities = self.predictor(images)
        observe_model_call(len(images), time.perf_counter() - started)
        return probabilities


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
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    @bentoml.on_deployment
    def check_model() -> None:
        """Once per `bentoml serve`, before any worker starts: the model's metadata is readable and the artefact
        to run exists, or one line and exit status 2 (instead of workers failing one after the other)."""
        with _one_line_errors():
            _served_model()

    def __init__(self) -> None:
        config, model = _served_model()
        self.config = config
        self.tag = model.tag
        self.image_size = model.image_size
        self.crop = model.crop
        self.attributes = list(model.attributes)
        self.thresholds = model.thresholds_for(config).tolist()
        self.limits = config.decoding_limits()  # one decoding budget for all requests of this process
        self.limits.budget.on_release = return_freed_memory_after_large_images
        self._decoders = anyio.CapacityLimiter(config.decode_threads)  # uploads decoded at once
        if config.runner == "inline":
            # The model in this process, on its own thread, behind adaptive batching (faceattr/serve/batching.py).
            self.batcher = InlineBatcher(
                lambda: _ready_predictor(config, model),
                config.max_batch_size,
                config.max_latency_ms,
                observe=observe_model_call,
            )
        else:
            self.batcher = None
            # Requests are preprocessed in parallel threads; one torch thread each avoids oversubscribing the cores.
            torch.set_num_threads(1)

    def _load(self, path: Path) -> np.ndarray:
        """Read, check, decode and preprocess one upload (on a worker thread)."""
        return load_and_preprocess(Path(path).read_bytes(), self.image_size, self.crop, self.limits).numpy()

    async def _prepare(self, path: Path) -> np.ndarray:
        """One upload as a model input, prepared in a worker thread (concurrently with other requests and with the
        model); raises Rejected for a bad upload."""
        if not is_upload(path):
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
                    raise Rejected(
                        503, "the model is overloaded (requests would wait longer than max_latency_ms); retry shortly"
                    ) from None
                raise
        raise AssertionError("unreachable")

    def _result(self, probabilities: np.ndarray) -> dict:
        """``{"attributes": {name: probability}, "present": [names]}`` of one image."""
        rounded = np.round(probabilities.astype(np.float64), self.config.decimals).tolist()
        return {
            "attributes": dict(zip(self.attributes, rounded)),
            "present": [name for name, p, t in zip(self.attributes, probabilities.tolist(), self.thresholds) if p >= t],
        }

    # The endpoints answer with a JSONResponse, which BentoML sends as it is: the documented Prediction written
    # directly (BentoML would validate it field by field again), or a rejection. output_spec documents the success.
    @bentoml.api(route="/predict", output_spec=Prediction)
    async def predict(self, image: Path) -> JSONResponse:
        """Attribute probabilities of one photo: multipart field `image` (JPEG, PNG or WebP, any size). A portrait
        with the face roughly centred works best: it is centre-cropped like CelebA's aligned faces."""
        try:
            probabilities = await self._infer((await self._prepare(image))[None])
        except Rejected as exc:
            return rejected(exc.status, str(exc))
        count_answered(1)
        return JSONResponse({"model": self.tag, **self._result(probabilities[0])})

    @bentoml.api(route="/predict_batch", output_spec=BatchPrediction)
    async def predict_batch(self, images: list[Path]) -> JSONResponse:
        """Attribute probabilities of several photos in one call: multipart field `images`, repeated (at most
        max_images_per_request). One bad image rejects the whole request; the error names its position."""
        if len(images) > self.config.max_images_per_request:
            return rejected(
                413,
                f"{len(images)} images in one request; the limit is "
                f"{self.config.max_images_per_request} (max_images_per_request)",
            )
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
        count_answered(len(prepared))
        return JSONResponse({"model": self.tag, "predictions": [self._result(row) for row in probabilities]})


FaceAttr.add_asgi_middleware(
    UploadGuard, max_bytes=CONFIG.max_request_bytes, file_fields={"/predict": "image", "/predict_batch": "images"}
)
