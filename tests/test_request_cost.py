"""The cheaper request (issue 23, item 2): the prediction routes skip BentoML's tracing middleware unless
``trace_predictions`` is on, while the answers stay the documented JSON and ``/metrics`` still counts them; and the
benchmark that measured it (``benchmarks/request_cost.py``) in tiny mode, on real ``bentoml serve`` processes."""

from __future__ import annotations

import math
import secrets

import prometheus_client
import pytest
from serve_process import SAMPLES, service_in_process, stored_probe_model

from faceattr.serve.schemas import BatchPrediction, Prediction

NAMES = ("Smiling", "Eyeglasses", "Bald")
EXCLUDED = {"excluded_urls": ["/predict", "/predict_batch"]}


def _answered() -> float:
    return prometheus_client.REGISTRY.get_sample_value("faceattr_images_total", {"outcome": "ok"}) or 0.0


def test_prediction_routes_are_not_traced_by_default_and_answer_the_documented_json():
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    with (
        stored_probe_model(f"untraced-{secrets.token_hex(4)}", attributes=NAMES) as (tag, _),
        service_in_process(tag) as client,
    ):
        assert client.service.FaceAttr.config["tracing"] == EXCLUDED
        before = _answered()
        answer = client.post("/predict", files={"image": ("a.jpg", photo)})
        assert answer.status_code == 200, answer.text
        # The tracing middleware's span id is BentoML's request id: no span, no header.
        assert "x-bentoml-request-id" not in answer.headers
        assert answer.headers["content-type"] == "application/json"
        body = Prediction.model_validate_json(answer.content)
        assert body.model == tag and list(body.attributes) == list(NAMES) and body.face is None

        answer = client.post("/predict_batch", files=[("images", ("a.jpg", photo)), ("images", ("b.jpg", photo))])
        assert answer.status_code == 200, answer.text
        assert "x-bentoml-request-id" not in answer.headers
        batch = BatchPrediction.model_validate_json(answer.content)
        assert [p.attributes for p in batch.predictions] == [body.attributes] * 2
        assert _answered() - before == 3


def test_trace_predictions_leaves_bentomls_tracing_as_it_is():
    with (
        stored_probe_model(f"traced-{secrets.token_hex(4)}", attributes=NAMES) as (tag, _),
        service_in_process(tag, trace_predictions="true") as client,
    ):
        assert "tracing" not in client.service.FaceAttr.config
        assert client.service.CONFIG.trace_predictions is True


@pytest.mark.slow
def test_tiny_request_cost_run_serves_each_variant_and_pairs_its_cpu_with_the_baseline():
    from benchmarks import request_cost

    result = request_cost.run("tiny", ["baseline", "traced"], log=lambda line: None)
    assert list(result["variants"]) == ["baseline", "traced"]
    for name, variant in result["variants"].items():
        for level in ("c32", "c1"):
            figures = variant[level]
            assert figures["errors"] == {}, (name, level, figures)
            assert figures["img_s"] > 0 and figures["api_cpu_ms_per_request"] >= 0
            assert len(figures["api_cpu_vs_baseline_reps"]) == request_cost.RUNS["tiny"]["reps"]
        # /metrics counted every measured request (and the warm-up's), traced or not.
        assert variant["predict_requests_counted"] >= variant["predict_requests_measured"] == 32 + 4
    baseline, traced = result["variants"]["baseline"], result["variants"]["traced"]
    assert all(math.isnan(r) or r == 1.0 for r in baseline["c32"]["api_cpu_vs_baseline_reps"])
    # What each server is: the service as it is skips the tracing middleware on /predict; trace_predictions does not.
    assert (baseline["request_id_header"], traced["request_id_header"]) == (False, True)
    rows = request_cost.table(result).splitlines()
    assert len(rows) == 4 and rows[2].startswith("| baseline |") and rows[3].startswith("| traced |")
