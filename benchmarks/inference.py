"""Inference on the CPU: the eager model against the exported TorchScript and ONNX artefacts.

For each backbone a randomly initialized ``FaceAttrModule`` (quickstart input size) goes through the project's
export code (``faceattr.export.build``: ``probability_model`` -> ``export_torchscript`` / ``export_onnx``, loaded
back with ``load_torchscript`` / ``onnx_session`` as the service does). Eager is the same ``ProbabilityModel``
under ``torch.inference_mode``. Inputs: float32 [0, 1] images at batch 1 and 32. Each repetition times the same
number of calls of every runtime, interleaved call by call; latency p50/p99 over all timed calls, img/s = batch / p50
of a repetition (median over repetitions), ratios = median of the per-repetition ratios.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Settings
from benchmarks.timing import latency_summary, median, percentile

RUNTIMES = ("eager", "torchscript", "onnx")


def onnx_spinning() -> bool:
    """ONNX Runtime's threads spin while idle unless the benchmark runs torch's OpenMP threads passive too."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"


def onnx_session(path: Path):
    """``faceattr.artefacts.onnx_session`` (CPU, default threads); with ``OMP_WAIT_POLICY=PASSIVE`` (the benchmark's
    default on a shared machine) ONNX Runtime's own thread pool gets the same treatment: no spinning while idle."""
    from faceattr.artefacts import onnx_session as session_of

    if onnx_spinning():
        return session_of(path)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def build_runtimes(backbone: str, image_size, out_dir: Path) -> dict[str, Any]:
    """``{runtime: callable(float tensor) -> probabilities}`` for one randomly initialized backbone."""
    from faceattr.artefacts import load_torchscript
    from faceattr.attributes import CELEBA_ATTRIBUTES
    from faceattr.contract import INPUT_NAME, OUTPUT_NAME
    from faceattr.export import build
    from faceattr.model import FaceAttrModule

    torch.manual_seed(0)
    module = FaceAttrModule(backbone, CELEBA_ATTRIBUTES, image_size, crop=178).eval()
    model = build.probability_model(module)
    example = torch.rand(2, 3, *image_size)
    ts_path = build.export_torchscript(model, example, out_dir / f"{backbone}.pt", {"bench": True})
    onnx_path = build.export_onnx(model, example, out_dir / f"{backbone}.onnx", {"bench": True})
    scripted, _ = load_torchscript(ts_path)
    session = onnx_session(onnx_path)

    def eager(x: torch.Tensor):
        with torch.inference_mode():
            return model(x)

    def torchscript(x: torch.Tensor):
        with torch.inference_mode():
            return scripted(x)

    def onnx(x: torch.Tensor):
        return session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]

    with torch.inference_mode():
        reference = model(example).numpy()
    for name, fn in (("torchscript", torchscript), ("onnx", onnx)):
        out = fn(example)
        out = out.numpy() if isinstance(out, torch.Tensor) else out
        if not np.allclose(out, reference, atol=1e-4):
            raise AssertionError(f"{name} output of {backbone} differs from eager by {np.abs(out - reference).max()}")
    return {
        "eager": eager,
        "torchscript": torchscript,
        "onnx": onnx,
        "num_parameters": sum(p.numel() for p in module.net.parameters()),
    }


def interleaved_calls(runtimes: dict[str, Any], x: torch.Tensor, calls: int, repetitions: int, warmup: int = 1):
    """Time ``calls`` calls of every runtime per repetition, interleaved call by call (A B C, C B A, ...), so that
    a change of background load within a repetition hits every runtime alike.

    Returns (all timed latencies per runtime, per-repetition latency lists per runtime); the warm-up repetition is
    in neither.
    """
    names = list(runtimes)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    reps: dict[str, list[list[float]]] = {name: [] for name in names}
    for rep in range(warmup + repetitions):
        times: dict[str, list[float]] = {name: [] for name in names}
        for call in range(calls):
            for name in names if call % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                runtimes[name](x)
                times[name].append(time.perf_counter() - started)
        if rep >= warmup:
            for name in names:
                latencies[name].extend(times[name])
                reps[name].append(times[name])
    return latencies, reps


def run(settings: Settings, image_size, log=print) -> dict[str, Any]:
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "image_size": list(image_size),
        "onnx_spinning": onnx_spinning(),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="faceattr-bench-export-") as tmp:
        for backbone in settings.inference_backbones:
            runtimes = build_runtimes(backbone, image_size, Path(tmp))
            entry: dict[str, Any] = {"num_parameters": runtimes.pop("num_parameters")}
            for batch, calls in ((1, settings.inference_calls_b1), (32, settings.inference_calls_b32)):
                x = torch.rand(batch, 3, *image_size)
                for name in RUNTIMES:  # warm-up: TorchScript's profiling executor specializes over the first calls
                    for _ in range(3):
                        runtimes[name](x)
                latencies, reps = interleaved_calls(
                    {name: runtimes[name] for name in RUNTIMES}, x, calls, settings.repetitions
                )
                for name in RUNTIMES:
                    summary = latency_summary(latencies[name], batch)
                    summary["img_s"] = median(batch / percentile(rep, 50) for rep in reps[name])
                    entry[f"{name}_b{batch}"] = {
                        k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()
                    }
                    entry[f"{name}_b{batch}"]["reps"] = [round(batch / percentile(rep, 50), 3) for rep in reps[name]]
            result["models"][backbone] = entry
            log(
                f"  {backbone}: b1 img/s eager {entry['eager_b1']['img_s']:.0f}, torchscript "
                f"{entry['torchscript_b1']['img_s']:.0f}, onnx {entry['onnx_b1']['img_s']:.0f}; b32 eager "
                f"{entry['eager_b32']['img_s']:.0f}, torchscript {entry['torchscript_b32']['img_s']:.0f}, "
                f"onnx {entry['onnx_b32']['img_s']:.0f}"
            )
    return result
