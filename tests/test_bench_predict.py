"""`python -m benchmarks.predict` (predict.py against its ceiling), the figure docs/serving.md's *Predict a folder*
points to: one quick repetition on the tiny run's export, so that the command behind the figure keeps working and
its figures mean what they say."""

from __future__ import annotations

import math

import pytest
from serve_process import exported_model

from benchmarks.predict import compare

pytestmark = pytest.mark.slow  # the fixture is the tiny run's export (a CLI run, shared with the serving tests)


def test_predict_is_compared_with_the_model_alone_on_every_photo(tiny_run, synthetic_root):
    folder = synthetic_root / "img_align_celeba"
    photos = len(list(folder.glob("*.jpg")))
    result = compare(exported_model(tiny_run), folder, repetitions=1, log=lambda _: None)

    assert result["photos"] == photos > 0
    assert result["model"]["format"] == "onnx"
    assert set(result["img_s"]) == set(result["cpu_ms_per_photo"]) == {"ceiling", "predict", "decode"}
    assert all(len(reps) == 1 for reps in result["reps_img_s"].values())
    cpu = result["cpu_ms_per_photo"]
    assert all(value > 0 for value in cpu.values())
    # predict.py decodes every photo and runs the same model on it: it costs more CPU per photo than either alone.
    assert cpu["predict"] > max(cpu["ceiling"], cpu["decode"])
    assert 0 < result["predict_vs_ceiling_cpu"] < 1
    assert math.isclose(result["decode_share_of_model_cpu"], cpu["decode"] / cpu["ceiling"], rel_tol=0.05, abs_tol=0.01)
    assert result["predict_vs_ceiling"] == pytest.approx(
        result["reps_img_s"]["predict"][0] / result["reps_img_s"]["ceiling"][0], rel=1e-2
    )
