"""What each per-request step costs the API, one change at a time:
``OMP_WAIT_POLICY=PASSIVE python -m benchmarks.request_cost [--quick] [--json PATH]``.

The serving benchmark (``benchmarks/serving.py``) reports the API's CPU per image against the model's; this one
measures what ONE change of a per-request step does to the first. A randomly initialized quickstart model is exported
by the project's export path into a temporary store (``served_model``) and served fp32 by one ``bentoml serve`` per
variant (``benchmarks/request_variants.py``: the service as it is, and each change alone), all side by side, each
with a BENTOML_HOME of its own that shares the store's models (``bentoml serve`` empties its Prometheus folder at
start). The same clients (``benchmarks/http_load.py``) POST the same generated 178x218 JPEGs to ``/predict`` at
concurrency 32 and 1; in each repetition every server is loaded back to back, in reverse order every other one
(A B C, C B A, ...), so that neighbours saw the same background load. The CPU of each server's process tree is split
as the serving benchmark splits it (``serving.cpu_seconds``: ``model`` = the model thread, ``api`` = the rest of the
FaceAttr workers). The figure of a variant is the median over repetitions of its API CPU per request divided by the
baseline's of the same repetition: the cores are shared, so only such paired ratios compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

#: The largest upload ``inline_decode`` prepares on the event loop (a generated CelebA JPEG is ~10 kB).
INLINE_BYTES = 64 * 1024

#: The variants: what each changes against the service as it is (``baseline``; conf/serve's defaults).
VARIANTS: dict[str, str] = {
    "baseline": "the service as it is (trace_predictions: false: the prediction routes skip BentoML's tracing)",
    "traced": "trace_predictions: true (BentoML's default: every route through its OpenTelemetry middleware)",
    "traced_otel_sdk_disabled": "trace_predictions: true and OTEL_SDK_DISABLED=true (OpenTelemetry's no-op tracer)",
    "json_bytes": "the answer as pydantic_core.to_json bytes in a starlette Response, not a JSONResponse",
    "bentoml_encodes": "the answer returned as the output_spec model (Prediction), serialized by BentoML",
    "inline_decode": f"uploads of at most {INLINE_BYTES} bytes (face=center) prepared on the event loop, no thread hop",
}

#: The variants' extra environment of ``bentoml serve`` (code changes: ``benchmarks/request_variants.py``).
VARIANT_ENV: dict[str, dict[str, str]] = {
    "traced": {"FACEATTR_SERVE_TRACE_PREDICTIONS": "true"},
    "traced_otel_sdk_disabled": {"FACEATTR_SERVE_TRACE_PREDICTIONS": "true", "OTEL_SDK_DISABLED": "true"},
}

#: BentoML's counter of the requests its HTTP server answered, per route, on ``/metrics``.
REQUEST_METRIC = "bentoml_service_request_total"

#: What one run measures per mode: repetitions, requests per repetition at each concurrency, seconds per level.
RUNS: dict[str, dict[str, Any]] = {
    "full": {"reps": 8, "requests": {32: 1200, 1: 150}, "max_seconds": 30.0},
    "quick": {"reps": 4, "requests": {32: 480, 1: 60}, "max_seconds": 20.0},
    "tiny": {"reps": 1, "requests": {32: 32, 1: 4}, "max_seconds": 10.0},
}

SERVICE = "benchmarks.request_variants:Service"


def start_variants(env: dict[str, str], tmp: Path, variants: list[str]) -> dict[str, Any]:
    """One ``bentoml serve`` per variant on the store of ``env``, each with its own BENTOML_HOME sharing the models
    (``serving.server_beside``); all started before any is waited for. A server that does not start stops the
    others."""
    from benchmarks.serving import Contender, server_beside

    contenders: dict[str, Any] = {}
    try:
        for name in variants:
            own = {**VARIANT_ENV.get(name, {}), "FACEATTR_BENCH_REQUEST_VARIANT": name}
            contenders[name] = Contender(server_beside(env, tmp / name, SERVICE, settings=own))
        for contender in contenders.values():
            contender.startup_s = round(contender.server.wait_ready(), 1)
    except BaseException:
        for contender in contenders.values():
            contender.server.stop()
        raise
    return contenders


def probe(url: str, image: tuple[str, bytes]) -> dict[str, Any]:
    """What a variant is, seen from outside: whether a /predict answer carries BentoML's X-BentoML-Request-ID (set by
    its tracing middleware) and how many /predict requests ``/metrics`` counted so far (BentoML's request counter)."""
    import httpx

    counted = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(REQUEST_METRIC + "{") and 'endpoint="/predict"' in line:
            counted += float(line.rsplit(None, 1)[1])
    answer = httpx.post(f"{url}/predict", files={"image": image}, timeout=30)
    answer.raise_for_status()
    return {"request_id_header": "x-bentoml-request-id" in answer.headers, "predict_requests_counted": counted}


def _ratio(a: float, b: float) -> float:
    """a / b; NaN where b is 0 (a tiny run's CPU can be below the clock's tick)."""
    return a / b if b else math.nan


def figures(contender: Any, baseline: Any, concurrency: int) -> dict[str, Any]:
    """A variant's figures at ``concurrency``: img/s, latencies, CPU ms per request (= per image) of the API and the
    model, and its API CPU as the median paired ratio to the baseline's of the same repetitions."""
    samples, base = contender.levels[concurrency], baseline.levels[concurrency]
    summary = samples.summary()
    cpu = summary["cpu_ms_per_image"]
    ratios = [_ratio(mine["api"], theirs["api"]) for mine, theirs in zip(samples.cpu, base.cpu)]
    return {
        "img_s": round(summary["img_s"], 1),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "mean_batch": summary["mean_batch"],
        "api_cpu_ms_per_request": round(statistics.median(c["api"] for c in samples.cpu), 3),
        "model_cpu_ms_per_image": round(statistics.median(c["model"] for c in samples.cpu), 3),
        "client_cpu_ms_per_request": cpu.get("client"),
        "api_per_model_cpu": round(statistics.median(_ratio(c["api"], c["model"]) for c in samples.cpu), 3),
        "api_cpu_vs_baseline": round(statistics.median(ratios), 3),
        "api_cpu_vs_baseline_reps": [round(r, 3) for r in ratios],
        "errors": summary["errors"],
    }


def run(mode: str, variants: list[str], log=print) -> dict[str, Any]:
    """Export, serve every variant, load them interleaved (module docstring); the figures of each."""
    from benchmarks import common
    from benchmarks.serving import export_random_model, serve_environment

    plan = RUNS[mode]
    base_settings = common.MODES[mode]
    settings = dataclasses.replace(
        base_settings, serve_requests=dict(plan["requests"]), serve_max_seconds=plan["max_seconds"]
    )
    cfg = common.quickstart_config(*base_settings.config_overrides)
    paths = common.serving_images(common.prepare_data(base_settings, cfg), 64)
    images = [(p.name, p.read_bytes()) for p in paths]
    tmp = Path(tempfile.mkdtemp(prefix="faceattr-request-cost-"))
    try:
        env = serve_environment(tmp, {"FACEATTR_SERVE_PRECISION": "fp32"})
        _, export_s = export_random_model(cfg, tmp, env)
        log(f"exported in {export_s:.0f}s; starting {len(variants)} servers")
        contenders = start_variants(env, tmp, variants)
        try:
            order = list(contenders.values())
            for contender in order:
                contender.warm_up(images, settings)
            levels = list(plan["requests"])
            for rep in range(plan["reps"]):
                forward = rep % 2 == 0
                for concurrency in levels if forward else levels[::-1]:
                    for contender in order if forward else order[::-1]:
                        contender.measure(images, concurrency, settings)
                log(f"repetition {rep + 1}/{plan['reps']} done")
            probes = {name: probe(contender.server.url, images[0]) for name, contender in contenders.items()}
        finally:
            for contender in contenders.values():
                contender.server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    baseline = contenders["baseline"]
    return {
        "mode": mode,
        "command": "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.request_cost"
        + ("" if mode == "full" else f" --{mode}"),
        "backbone": str(cfg.model.backbone),
        "precision": "fp32",
        "reps": plan["reps"],
        "requests": {f"c{c}": n for c, n in plan["requests"].items()},
        "image_bytes_mean": int(statistics.mean(len(data) for _, data in images)),
        "variants": {
            name: {
                "what": VARIANTS[name],
                "startup_s": contender.startup_s,
                **probes[name],
                "predict_requests_measured": sum(len(level.latencies) for level in contender.levels.values()),
                **{f"c{c}": figures(contender, baseline, c) for c in plan["requests"]},
            }
            for name, contender in contenders.items()
        },
    }


def table(result: dict[str, Any]) -> str:
    """The markdown table of a run (c32): variant, API CPU ms/request, ratio to baseline, model ms/image, img/s."""
    lines = [
        "| variant | API CPU ms/request | / baseline (paired) | model CPU ms/image | API/model | img/s c32 "
        "| p50/p99 ms c32 | API CPU ms/request c1 (/ baseline) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in result["variants"].items():
        c32, c1 = v["c32"], v["c1"]
        lines.append(
            f"| {name} | {c32['api_cpu_ms_per_request']:.3f} | {c32['api_cpu_vs_baseline']:.3f} | "
            f"{c32['model_cpu_ms_per_image']:.3f} | {c32['api_per_model_cpu']:.2f} | {c32['img_s']:.0f} | "
            f"{c32['p50_ms']:.0f}/{c32['p99_ms']:.0f} | "
            f"{c1['api_cpu_ms_per_request']:.3f} ({c1['api_cpu_vs_baseline']:.3f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and requests")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and a few requests (the smoke test)")
    parser.add_argument(
        "--variant", action="append", choices=[v for v in VARIANTS if v != "baseline"], help="repeatable (default: all)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp in every process started from here
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    variants = ["baseline", *(args.variant or [v for v in VARIANTS if v != "baseline"])]
    result = run(mode, variants, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(table(result))
    if args.json is not None:
        from faceattr.atomic import write_text

        write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
