"""faceattr's service with ONE per-request step changed, for ``benchmarks/request_cost.py``:
``bentoml serve benchmarks.request_variants:Service`` with ``FACEATTR_BENCH_REQUEST_VARIANT`` naming the change
(``request_cost.VARIANTS``; unset or ``baseline``: the service as it is).

The code changes are made here, to the imported service, so that the product carries no switch nobody would turn:
the response builder the endpoints call (``JSONResponse`` in faceattr/serve/service.py) and the upload preparation's
thread hop. The variants that are settings (``trace_predictions``, OpenTelemetry's ``OTEL_SDK_DISABLED``) are the
environment ``request_cost.VARIANT_ENV`` gives the server; here they serve the service as it is. The service is
exported as ``Service`` so that the command line of ``bentoml serve`` does not name ``FaceAttr``
(``serving.cpu_seconds`` counts a process whose command line names it as the API's).
"""

from __future__ import annotations

import os
from typing import Any

import pydantic_core
from pydantic import BaseModel
from starlette.responses import Response

from benchmarks.request_cost import INLINE_BYTES, VARIANTS
from faceattr.serve import service as _service
from faceattr.serve.images import ImageError
from faceattr.serve.rejections import Rejected
from faceattr.serve.schemas import BatchPrediction, Prediction

VARIANT = os.environ.get("FACEATTR_BENCH_REQUEST_VARIANT", "baseline")
if VARIANT not in VARIANTS:
    raise SystemExit(f"error: FACEATTR_BENCH_REQUEST_VARIANT={VARIANT!r}: expected one of {', '.join(VARIANTS)}")

Service = _service.FaceAttr


def _json_bytes(body: dict[str, Any]) -> Response:
    return Response(pydantic_core.to_json(body), media_type="application/json")


def _returned(body: dict[str, Any]) -> BaseModel:
    """The documented output model: BentoML serializes what the endpoint returns with its ``model_dump_json``."""
    return (BatchPrediction if "predictions" in body else Prediction).model_validate(body)


async def _prepare_inline_when_small(self, data: bytes, options):
    if len(data) > INLINE_BYTES or options.detect:
        return await _threaded_prepare(self, data, options)
    try:
        return self.faces.prepare(data, options)
    except ImageError as exc:
        raise Rejected(exc.status, str(exc)) from None


_threaded_prepare = Service.inner._prepare

if VARIANT == "json_bytes":
    _service.JSONResponse = _json_bytes
elif VARIANT == "bentoml_encodes":
    _service.JSONResponse = _returned
elif VARIANT == "inline_decode":
    Service.inner._prepare = _prepare_inline_when_small
