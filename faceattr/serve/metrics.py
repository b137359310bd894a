"""The service's own Prometheus metrics, on ``/metrics`` beside BentoML's own (``bentoml_service_*``).

Besides the work done (model calls, images, faces), the drift of what the model decides: each attribute found
present in an answered image (``faceattr_attribute_present_total``, by the served thresholds) beside the rates export
measured on the test split (``faceattr_attribute_test_predicted_rate``: the model's decisions there;
``faceattr_attribute_test_positive_rate``: its labels), so that a dashboard compares them
(docs/serving.md, Metrics and drift).

Declared through ``bentoml.metrics``, which imports ``prometheus_client`` on first use, in the process that uses it,
so that each worker writes to BentoML's multiprocess metrics directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

#: One sample per attribute name (the model's own names, whatever the training data called them): a few dozen.
ATTRIBUTE_PRESENT = bentoml.metrics.Counter(
    name="faceattr_attribute_present",
    documentation="Answered images (their largest face, or centre crop) in which the attribute was found present "
    "(probability >= the served threshold); divided by faceattr_images_total{outcome='ok'}: the served positive rate",
    labelnames=["attribute"],
)
#: The test split's rates that export records in the model's metadata (``metrics.test.<key>``), by gauge.
TEST_RATES = {
    "predicted_positive_rates": bentoml.metrics.Gauge(
        name="faceattr_attribute_test_predicted_rate",
        documentation="Share of the test split's images in which the model, at its thresholds, found the attribute "
        "present, as export measured it (metrics.test.predicted_positive_rates): the rate the served one should match",
        labelnames=["attribute"],
        multiprocess_mode="max",  # every API worker sets the same values
    ),
    "positive_rates": bentoml.metrics.Gauge(
        name="faceattr_attribute_test_positive_rate",
        documentation="Share of the test split's labels that are 1, per attribute (metrics.test.positive_rates)",
        labelnames=["attribute"],
        multiprocess_mode="max",
    ),
}
_present_counters: dict[str, Any] = {}


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


def count_present(names: list[str]) -> None:
    """One answered image: the attributes found present in it."""
    for name in names:
        counter = _present_counters.get(name)
        if counter is None:
            counter = _present_counters[name] = ATTRIBUTE_PRESENT.labels(attribute=name)
        counter.inc()


def record_test_rates(rates: Callable[[str], dict[str, float]]) -> None:
    """The served model's test-split rates, ``rates(key)`` for each key of :data:`TEST_RATES` (``{attribute: rate}``,
    empty where the export recorded none), once per API worker."""
    for key, gauge in TEST_RATES.items():
        for name, rate in rates(key).items():
            gauge.labels(attribute=name).set(rate)
