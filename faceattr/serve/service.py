"""The BentoML service: ``bentoml serve`` from the repo root (``bentofile.yaml`` names ``FaceAttr``).

``FaceAttr`` is the HTTP API: ``POST /predict`` (multipart field ``image``) and ``POST /predict_batch`` (multipart
field ``images``, repeated), with the form field ``face`` (and ``faces`` on /predict) choosing where the model looks
(the centre crop, or the faces a detector finds: ``face_finding.py``; by default the mode the model was trained
for, ``runtime.served_face``), and ``GET /model_card`` (``pages.py``). It checks, decodes, finds faces in and
preprocesses uploads in a thread pool, concurrently, runs the model on uint8 batches and turns probabilities into
JSON (documented by ``schemas.py``). Where the model runs is ``runner`` (conf/serve):

* ``inline`` (default): in each API worker process, on a dedicated thread, behind adaptive batching
  (``faceattr/serve/batching.py``): the requests waiting when the model becomes free are merged into one call of up
  to ``max_batch_size`` images. No second hop per image: the fastest on CPU (BENCHMARKS.md, Serving).
* ``service``: in ``FaceAttrModel``, a second BentoML service (its own process(es), ``model_workers``) with one
  batchable endpoint ``infer``, which BentoML's adaptive batching feeds; the API calls it over BentoML's
  inter-service HTTP. For several API workers sharing one GPU model, or scaling the two independently.

Settings come from ``conf/serve/*.yaml`` and ``FACEATTR_SERVE_*`` variables (``faceattr/serve/config.py``). Around
the API: the upload reader (``upload_guard.py``: each upload read, parsed and checked once, before BentoML; the
endpoints get its bytes), the metrics (``metrics.py``: with the attributes found present, for drift), the heap trim
after large images (``heap.py``), BentoML's tracing kept off the prediction routes (``trace_predictions``), the model
card route and the landing page's text (``pages.py``) and what depends on BentoML's internals
(``bentoml_workarounds.py``: the input spec that hands the reader's upload to the endpoints, and the OpenAPI 3
document).

With an ONNX model on a CPU the service imports no torch: numpy, onnxruntime, Pillow and simplejpeg do the work
(``benchmarks/serve_memory.py``: each API worker ~205 MB after 300 requests, against ~1 GB with torch imported).
torch is imported only to run a TorchScript artefact (``runtime.Predictor``), and the CPU Bento
(``bentofile.cpu.yaml``) ships none (``tests/test_torch_free.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio.to_thread
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from faceattr.serve.batching import InlineBatcher, Overloaded
from faceattr.serve.bentoml_workarounds import KEEP_MODEL_CONNECTION, OpenAPI3Document
from faceattr.serve.config import ServeConfig, ServeConfigError, load_serve_config
from faceattr.serve.face_finding import FaceFinder, FaceOptions, face_json, face_options
from faceattr.serve.heap import return_freed_memory_after_large_images
from faceattr.serve.images import ImageError, PreparedFace
from faceattr.serve.metrics import (
    count_answered,
    count_present,
    observe_face_detection,
    observe_model_call,
    record_test_rates,
)
from faceattr.serve.pages import ModelCardRoute, describe_service
from faceattr.serve.rejections import Rejected, rejected
from faceattr.serve.runtime import (
    ModelError,
    ModelInfo,
    Predictor,
    pick_device,
    resolve_model,
    served_face,
    served_model,
)
from faceattr.serve.schemas import BatchPrediction, Prediction, upload_inputs, upload_route
from faceattr.serve.upload_guard import UploadGuard

log = logging.getLogger(__name__)

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


def _class_settings() -> tuple[ServeConfig, ModelInfo]:
    """The settings (API workers made concrete for the device, the face default decided for the model) and the model
    to serve, found in the store and its metadata read (not its artefact)."""
    with _one_line_errors():
        config = load_serve_config()
        model = resolve_model(config)
        return served_face(config, model).for_device(pick_device(config.device)), model


# The only work at import, because BentoML reads the class definitions below when it imports this module (`bentoml
# serve` before it starts any worker, `bentoml build`, and each worker): the decorators need the settings (workers,
# timeout, batching), `bento_model` needs the model's exact name:version, which `bentoml build` packages and
# `bentoml serve` resolves before starting workers (pulling from BentoCloud if the local store lacks it), and the
# request documents need the model's face default (its contract, in its faceattr.json). Looking the model up here
# also makes a missing or unreadable model one line and exit status 2 before anything starts. The artefact to run is
# checked once by `check_model` before the workers start, and loaded in __init__.
CONFIG, MODEL = _class_settings()
MODEL_TAG = MODEL.tag


def _served_model() -> tuple[ServeConfig, ModelInfo]:
    """The settings with the artefact format decided, and the model: the version found at import."""
    return served_model(CONFIG, MODEL_TAG)


#: The requests of /predict and /predict_batch (the form field `face` defaults to the server's, for this model).
PredictInput, PredictBatchInput = upload_inputs(CONFIG.face)


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


#: The routes that ``trace_predictions: false`` (conf/serve) takes out of BentoML's OpenTelemetry middleware.
PREDICTION_ROUTES = ("/predict", "/predict_batch")


def _tracing(config: ServeConfig) -> dict[str, Any]:
    """BentoML's ``tracing`` setting of the API where ``trace_predictions`` is off: its OpenTelemetry middleware (always
    installed) costs 18-26% of the API's CPU per request at 32 clients, sampled or not (benchmarks/request_cost.py)."""
    return {} if config.trace_predictions else {"tracing": {"excluded_urls": list(PREDICTION_ROUTES)}}


@bentoml.service(
    name="FaceAttr",
    workers=CONFIG.api_workers,
    traffic={"timeout": CONFIG.timeout_s},
    logging={"access": {"enabled": CONFIG.access_log}},
    **_tracing(CONFIG),
)
class FaceAttr:
    """Face attributes of photos: the probability of each of the model's attributes and those present, per image."""

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
        self.attributes = list(model.attributes)
        self.thresholds = model.thresholds_for(config).tolist()
        record_test_rates(model.test_rates)
        if config.face != model.default_face_mode:
            log.warning(
                "face=%s (%s), but model %s was trained on %s faces: requests that do not choose get face=%s",
                config.face,
                config.source,
                model.tag,
                "detector-aligned" if model.default_face_mode == "detect" else "CelebA-aligned (centre-cropped)",
                config.face,
            )
        limits = config.decoding_limits()  # one decoding budget for all requests of this process
        limits.budget.on_release = return_freed_memory_after_large_images
        self.faces = FaceFinder(
            model.image_size,
            model.crop,
            limits,
            template=model.face_template,
            jpeg_scaling=model.jpeg_scaling,
            no_face=config.no_face,
            max_side=config.face_max_side,
            min_score=config.face_min_score,
            observe=observe_face_detection,
        )
        if config.face == "detect":  # the default: ready before the first request (else made when first asked for)
            self.faces.load_detector()
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

    async def _prepare(self, data: bytes, options: FaceOptions) -> list[PreparedFace]:
        """One upload as model inputs (one, or one per face with faces=all): checked, decoded, its faces found
        (face=detect) and preprocessed in a worker thread (concurrently with other requests and with the model);
        raises Rejected for a bad upload."""
        try:
            return await anyio.to_thread.run_sync(self.faces.prepare, data, options, limiter=self._decoders)
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

    def _result(self, probabilities: np.ndarray, prepared: PreparedFace) -> dict[str, Any]:
        """``{"attributes": {name: probability}, "present": [names], "face": {...} | None}`` of one model input."""
        rounded = np.round(probabilities.astype(np.float64), self.config.decimals).tolist()
        return {
            "attributes": dict(zip(self.attributes, rounded)),
            "present": [name for name, p, t in zip(self.attributes, probabilities.tolist(), self.thresholds) if p >= t],
            "face": face_json(prepared.face),
        }

    # The endpoints take the upload the upload reader read (upload_guard.py; input specs: schemas.py) and answer with
    # a JSONResponse, which BentoML sends as it is: the documented Prediction written directly (BentoML would
    # validate it field by field again), or a rejection. output_spec documents the success.
    @bentoml.api(route="/predict", input_spec=PredictInput, output_spec=Prediction)
    async def predict(self, image: bytes, face: Any, faces: Any) -> JSONResponse:
        """Attribute probabilities of one photo: multipart field `image` (JPEG, PNG or WebP, any size), and the form
        fields `face` (center | detect) and `faces` (largest | all). With face=center send a portrait with the face
        roughly centred: it is centre-cropped like CelebA's aligned faces; with face=detect any photo."""
        try:
            options = _options(face, faces)
            prepared = await self._prepare(image, options)
            probabilities = await self._infer(np.stack([item.pixels for item in prepared]))
        except Rejected as exc:
            return rejected(exc.status, str(exc))
        count_answered(1)
        results = [self._result(row, item) for row, item in zip(probabilities, prepared)]
        count_present(results[0]["present"])  # the largest face (or the centre crop), as /predict_batch answers
        if options.all_faces:
            return JSONResponse({"model": self.tag, "faces": results})
        return JSONResponse({"model": self.tag, **results[0]})

    @bentoml.api(route="/predict_batch", input_spec=PredictBatchInput, output_spec=BatchPrediction)
    async def predict_batch(self, images: list[bytes], face: Any) -> JSONResponse:
        """Attribute probabilities of several photos in one call: multipart field `images`, repeated (at most
        max_images_per_request), and the form field `face` (center | detect: the largest face of each photo). One
        bad image rejects the whole request; the error names its position."""
        try:
            options = _options(face)
        except Rejected as exc:
            return rejected(exc.status, str(exc))
        prepared = await asyncio.gather(*(self._prepare(data, options) for data in images), return_exceptions=True)
        for index, item in enumerate(prepared):
            if isinstance(item, Rejected):
                return rejected(item.status, f"image {index} (0-based, in the order sent): {item}")
            if isinstance(item, BaseException):
                raise item
        firsts = [item[0] for item in prepared]
        try:
            probabilities = await self._infer(np.stack([item.pixels for item in firsts]))
        except Rejected as exc:
            return rejected(exc.status, str(exc))
        count_answered(len(firsts))
        results = [self._result(row, item) for row, item in zip(probabilities, firsts)]
        for result in results:
            count_present(result["present"])
        return JSONResponse({"model": self.tag, "predictions": results})


def _options(face: Any, faces: Any = "largest") -> FaceOptions:
    """The request's face options (form fields), or Rejected(400) for a bad value."""
    try:
        return face_options(face, faces)
    except ValueError as exc:
        raise Rejected(400, str(exc)) from None


# The upload reader in front of the endpoints; the model card; the OpenAPI document as valid OpenAPI 3, describing
# this service.
FaceAttr.add_asgi_middleware(
    UploadGuard,
    max_bytes=CONFIG.max_request_bytes,
    routes={
        "/predict": upload_route(PredictInput),
        "/predict_batch": upload_route(PredictBatchInput, CONFIG.max_images_per_request),
    },
)
FaceAttr.add_asgi_middleware(ModelCardRoute, model=MODEL)
FaceAttr.add_asgi_middleware(OpenAPI3Document, amend=describe_service(MODEL, CONFIG))
