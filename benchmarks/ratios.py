"""The headline ratios, each computed from two figures of the same run.

A ratio is the median of the per-repetition ratios of its two figures: repetition i of the candidate ran right
next to repetition i of the baseline (interleaved A B B A ...), so each pair saw the same background load and the
median of the pairs is robust to load that changes during the run (a paired design). Where a ratio covers several
models (inference) it is the smallest over them.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.timing import median, ratio

#: name -> (target or None, meaning). Targets are lower bounds, except for the ratios in UPPER_BOUNDS.
RATIOS: dict[str, tuple[float | None, str]] = {
    "data_speedup_vs_seed": (
        3.0,
        "images/s of one worker process, JPEG on disk -> normalized float batch: faceattr's pipeline / the "
        "seed article's (pandas row, PIL, torchvision v1 transforms)",
    ),
    "cached_loader_vs_seed": (
        10.0,
        "images/s of one worker process reading faceattr's pre-decoded cache (data.cache; flip per read) -> "
        "normalized float batch / the seed article's pipeline decoding the JPEGs",
    ),
    "lightning_vs_raw_loop": (
        0.97,
        "training steps/s of Lightning Trainer.fit (as the project runs it: TensorBoard logger, LR monitor) / "
        "a hand-written PyTorch loop doing the same work on the same in-memory batches",
    ),
    "torchscript_vs_eager_b1": (
        1.0,
        "batch-1 img/s of the exported TorchScript / the eager model, CPU; the smallest over the benchmarked backbones",
    ),
    "onnx_vs_eager_b1": (
        None,
        "batch-1 img/s of the exported ONNX model in ONNX Runtime / the eager model, CPU; the smallest over "
        "the benchmarked backbones",
    ),
    "serve_c32_vs_inprocess_b32": (
        None,
        "img/s of `bentoml serve` under 32 concurrent clients (one JPEG per request, decoding included) / the "
        "same artefact in-process on ready uint8 batches of 32 (the ceiling); the quickstart model, reported: the "
        "target applies to the production-size model (`serve_vs_inprocess_resnet50_128`)",
    ),
    "serve_vs_inprocess_resnet50_128": (
        0.85,
        "serve_c32_vs_inprocess_b32 for the production-size model (resnet50 at 128x128), the one the target "
        "applies to: the same serving path against a model ~10x as costly per image",
    ),
    "serve_c32_vs_c1": (
        2.0,
        "img/s of `bentoml serve` at 32 concurrent clients / at 1 client: what adaptive batching buys",
    ),
    "served_vs_plain_bentoml_quickstart": (
        2.0,
        "img/s at 32 concurrent clients of faceattr's service / of a plain BentoML service for the same exported "
        "model written the documented way (PIL input, torchvision transforms, TorchScript, one batchable API; "
        "`benchmarks/plain_bentoml_service.py`) at its best worker count (1 or 2), loaded interleaved; the "
        "quickstart model",
    ),
    "served_vs_plain_bentoml_resnet50_128": (
        2.5,
        "served_vs_plain_bentoml_quickstart for the production-size model (resnet50 at 128x128)",
    ),
    "int8_vs_fp32_onnx_b32_resnet50_128": (
        1.8,
        "batch-32 img/s in process of the int8 ONNX artefact (export.quantize=int8, run by the service's Predictor) / "
        "the fp32 ONNX artefact of the same export, resnet50 at 128x128, repetitions paired",
    ),
    "api_cpu_per_model_cpu_quickstart": (
        0.5,
        "CPU ms per image of faceattr's API processes (HTTP, upload parsing, decoding, preprocessing, batching, "
        "JSON) / of its model threads, at 32 concurrent clients, quickstart model on the fp32 artefact: the "
        "per-request overhead relative to the model's compute (an upper bound); each request knob's effect: "
        "BENCHMARKS.md, Request cost",
    ),
}

#: The ratios whose target is an upper bound (lower is better).
UPPER_BOUNDS = frozenset({"api_cpu_per_model_cpu_quickstart"})

#: Extra ratios shown for context (no target).
EXTRA: dict[str, str] = {
    "loader_speedup_vs_seed": "images/s of the 2-worker DataLoader, faceattr / seed article",
    "loader_vs_train_step": "images/s of faceattr's 2-worker DataLoader / images/s of the quickstart training step "
    "on this CPU (above 1: the loader keeps the model fed)",
    "onnx_vs_torchscript_b32": "batch-32 img/s of ONNX Runtime / TorchScript (smallest over backbones)",
    "face_detect_vs_center": "img/s at 32 concurrent clients with face=detect (find and align the face) / with "
    "face=center (the default centre crop), quickstart model, the same server",
    "int8_vs_fp32_onnx_b32_quickstart": "int8_vs_fp32_onnx_b32_resnet50_128 for the quickstart model",
    "served_int8_vs_fp32_quickstart": "img/s at 32 concurrent clients of faceattr's service on the int8 artefact / "
    "on the fp32 one (a second server beside it, loaded right after), quickstart model",
    "served_int8_vs_fp32_resnet50_128": "served_int8_vs_fp32_quickstart for resnet50 at 128x128",
    "served_fp32_vs_plain_bentoml_resnet50_128": "served_vs_plain_bentoml_resnet50_128 with faceattr's service on the "
    "fp32 artefact: what the serving path alone buys",
    "api_cpu_per_model_cpu_quickstart_int8": "api_cpu_per_model_cpu_quickstart with the int8 artefact (the default "
    "on a CPU): the same API work against a cheaper model",
    "serve_vs_inprocess_resnet50_128_fp32": "serve_vs_inprocess_resnet50_128 on the fp32 artefact (the second server "
    "and its own ceiling): the ratio of a model whose compute dominates the per-request work",
}


def _get(results: dict[str, Any], path: str) -> Any:
    node: Any = results
    for key in path.split("/"):
        if not isinstance(node, dict) or key not in node:
            return math.nan
        node = node[key]
    return node


def plain_best(results: dict[str, Any], family: str, figure: str) -> str:
    """The path of ``figure`` (e.g. ``c32/reps``) of the plain BentoML peer at its best worker count in ``family``."""
    return f"{family}/plain_bentoml/workers/{_get(results, f'{family}/plain_bentoml/best_workers')}/{figure}"


def sources(results: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """For each ratio, the (numerator, denominator) figure paths (``family/key/...``) it is computed from."""
    models = _get(results, "inference/models")
    backbones = list(models) if isinstance(models, dict) else []
    fmt = "inference/models/{}/{}/reps"
    # The fp32 service's figures: the second server beside an int8 model, or the service itself when it runs fp32.
    fp32 = "serving/fp32" if isinstance(_get(results, "serving/fp32"), dict) else "serving"
    out: dict[str, list[tuple[str, str]]] = {
        "data_speedup_vs_seed": [("data/per_worker/ours_reps", "data/per_worker/seed_reps")],
        "cached_loader_vs_seed": [("data/per_worker/cached_reps", "data/per_worker/seed_reps")],
        "lightning_vs_raw_loop": [("training/lightning_reps", "training/raw_reps")],
        "torchscript_vs_eager_b1": [(fmt.format(b, "torchscript_b1"), fmt.format(b, "eager_b1")) for b in backbones],
        "onnx_vs_eager_b1": [(fmt.format(b, "onnx_b1"), fmt.format(b, "eager_b1")) for b in backbones],
        "serve_c32_vs_inprocess_b32": [("serving/c32/reps", "serving/inprocess_b32/reps")],
        "serve_c32_vs_c1": [("serving/c32/reps", "serving/c1/reps")],
        "serve_vs_inprocess_resnet50_128": [("serving_large/c32/reps", "serving_large/inprocess_b32/reps")],
        "served_vs_plain_bentoml_quickstart": [("serving/c32/reps", plain_best(results, "serving", "c32/reps"))],
        "served_vs_plain_bentoml_resnet50_128": [
            ("serving_large/c32/reps", plain_best(results, "serving_large", "c32/reps"))
        ],
        "int8_vs_fp32_onnx_b32_resnet50_128": [
            ("serving_large/inprocess_b32/reps", "serving_large/fp32/inprocess_b32/reps")
        ],
        "api_cpu_per_model_cpu_quickstart": [  # not paired: the medians over the repetitions of one level
            (f"{fp32}/c32/cpu_ms_per_image/api", f"{fp32}/c32/cpu_ms_per_image/model")
        ],
        "loader_speedup_vs_seed": [("data/loader/ours_reps", "data/loader/seed_reps")],
        "loader_vs_train_step": [("data/loader/ours_img_s", "training/raw_img_s")],  # not paired: median figures
        "onnx_vs_torchscript_b32": [(fmt.format(b, "onnx_b32"), fmt.format(b, "torchscript_b32")) for b in backbones],
        "face_detect_vs_center": [("serving/face_detect/c32/reps", "serving/c32/reps")],
        "int8_vs_fp32_onnx_b32_quickstart": [("serving/inprocess_b32/reps", "serving/fp32/inprocess_b32/reps")],
        "served_int8_vs_fp32_quickstart": [("serving/c32/reps", "serving/fp32/c32/reps")],
        "served_int8_vs_fp32_resnet50_128": [("serving_large/c32/reps", "serving_large/fp32/c32/reps")],
        "served_fp32_vs_plain_bentoml_resnet50_128": [
            ("serving_large/fp32/c32/reps", plain_best(results, "serving_large", "c32/reps"))
        ],
        "serve_vs_inprocess_resnet50_128_fp32": [
            ("serving_large/fp32/c32/reps", "serving_large/fp32/inprocess_b32/reps")
        ],
        "api_cpu_per_model_cpu_quickstart_int8": [  # when the service itself ran int8 (beside the fp32 one)
            ("serving/c32/cpu_ms_per_image/api", "serving/c32/cpu_ms_per_image/model")
        ]
        if fp32 != "serving"
        else [],
    }
    return out


def value(results: dict[str, Any], numerator: str, denominator: str) -> float:
    """The ratio of two figures: paired (median of element-wise ratios) for two repetition lists of equal length,
    else the plain ratio of two numbers; NaN when missing."""
    a, b = _get(results, numerator), _get(results, denominator)
    if isinstance(a, list) and isinstance(b, list):
        if not a or len(a) != len(b):
            return math.nan
        pairs = [ratio(x, y) for x, y in zip(a, b)]
        pairs = [p for p in pairs if math.isfinite(p)]
        return median(pairs) if pairs else math.nan
    if isinstance(a, list) or isinstance(b, list):
        return math.nan
    return ratio(a, b)


def compute(results: dict[str, Any]) -> dict[str, float | None]:
    """``{name: value}``; None where the figures were not measured (a family left out with ``--only``)."""
    values: dict[str, float | None] = {}
    for name, pairs in sources(results).items():
        candidates = [value(results, a, b) for a, b in pairs]
        candidates = [c for c in candidates if math.isfinite(c)]
        values[name] = round(min(candidates), 4) if candidates else None
    return values


def goal(name: str) -> str:
    """The target of a ratio as text: ``>= 2.0``, ``<= 0.5``, or ``report`` (no target)."""
    target = RATIOS[name][0]
    if target is None:
        return "report"
    return f"{'<=' if name in UPPER_BOUNDS else '>='} {target}"


def verdicts(values: dict[str, float | None]) -> dict[str, str]:
    out = {}
    for name, (target, _) in RATIOS.items():
        value = values.get(name)
        if value is None:
            out[name] = "not measured"
        elif target is None:
            out[name] = "report"
        else:
            met = value <= target if name in UPPER_BOUNDS else value >= target
            out[name] = "met" if met else "MISSED"
    return out
