"""The service's own Prometheus metrics, on ``/metrics`` beside BentoML's own (``bentoml_service_*``).

Declared through ``bentoml.metrics``, which imports ``prometheus_client`` on first use, in the process that uses it,
so that each worker writes to BentoML's multiprocess metrics directory.
"""

from __future__ import annotations

import bentoml

#: Histogram buckets of the seconds metrics.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MODEL_BATCH_SIZE = bentoml.metrics.Histogram(
    name="faceattr_model_batch_size",
    documentation="Images per model call (after adaptive batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="faceattr_model_seconds",
    documentation="Seconds per model call",
    buckets=SECONDS_BUCKETS,
)
IMAGES = bentoml.metrics.Counter(
    name="faceattr_images",
    documentation="API outcomes: outcome=ok counts images answered; outcome=<HTTP status> counts rejected requests",
    labelnames=["outcome"],
)

FACE_SECONDS = bentoml.metrics.Histogram(
    name="faceattr_face_detection_seconds",
    documentation="Seconds per photo finding and aligning faces (face=detect; decoding excluded)",
    buckets=SECONDS_BUCKETS,
)
FACES_FOUND = bentoml.metrics.Counter(
    name="faceattr_faces_found",
    documentation="Faces found in photos (face=detect), all requests together",
)
PHOTOS_WITHOUT_FACE = bentoml.metrics.Counter(
    name="faceattr_photos_without_face",
    documentation="Photos in which face=detect found no face (answered 422 or from the centre crop: no_face)",
)


def observe_model_call(images: int, seconds: float) -> None:
    """One call of the model: its batch size and duration."""
    MODEL_SECONDS.observe(seconds)
    MODEL_BATCH_SIZE.observe(images)


def count_answered(images: int) -> None:
    IMAGES.labels(outcome="ok").inc(images)


def count_rejected(status: int) -> None:
    IMAGES.labels(outcome=str(status)).inc()


def observe_face_detection(seconds: float, faces: int) -> None:
    """One photo through the face detector and aligner: its duration and how many faces it found."""
    FACE_SECONDS.observe(seconds)
    if faces:
        FACES_FOUND.inc(faces)
    else:
        PHOTOS_WITHOUT_FACE.inc()
