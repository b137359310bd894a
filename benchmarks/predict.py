"""predict.py against its ceiling: how much of the model-alone throughput a folder prediction keeps.

``OMP_WAIT_POLICY=PASSIVE python -m benchmarks.predict [--large] [--photos N] [--repetitions N] [--json PATH]``

docs/serving.md (*Predict a folder*) says what bounds predict.py's throughput; this measures it, so that the figure
comes with its command. A randomly initialized quickstart model (``--large``: the production-size model of the
serving benchmark, resnet50 at 128x128) is exported as the serving benchmark does (``benchmarks/served_model.py``;
ONNX, a temporary BentoML store), then, interleaved (A B B A ...), in this process:

- **ceiling**: the service's ``Predictor`` alone on the photos already decoded and cropped (uint8), batches of 32;
- **predict.py**: ``faceattr.prediction.predict_images`` on the files (decoding threads, batching, the CSV), its
  default settings (``face=center``, batches of 32, one decoding thread per core);
- **decoding alone**: ``load_and_preprocess`` of every photo on one thread (what no pipeline can hide entirely).

Each figure is wall img/s and CPU ms per photo (``time.process_time``: every thread of this process), the median of
the repetitions; ``predict_vs_ceiling`` is the median of the per-repetition ratios of wall img/s (each pair ran back
to back), ``predict_vs_ceiling_cpu`` that of CPU per photo (ceiling / predict.py). Prints a summary; ``--json``
writes every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.serving import export_random_model, serve_environment
from benchmarks.timing import interleaved, machine_info, median, ratio

BATCH = 32


def _predict_config(export_dir: Path, images: Path, out: Path):
    """``conf/predict/predict.yaml`` composed as ``python predict.py model=<export> images=<folder> out=<csv>``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from faceattr.config.schemas import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(common.REPO / "conf" / "predict"), version_base="1.3"):
        return compose("predict", overrides=[f"model={export_dir}", f"images={images}", f"out={out}"])


def compare(model: Path, folder: Path, repetitions: int, log=print) -> dict[str, Any]:
    """The ceiling, predict.py and decoding alone on the JPEGs of ``folder``, with the exported ``model`` (a folder
    holding ``faceattr.json``), interleaved; the figures and ratios of the module doc."""
    from faceattr.prediction import find_export, predict_images
    from faceattr.serve.config import default_serve_config
    from faceattr.serve.images import load_and_preprocess
    from faceattr.serve.runtime import Predictor, pick_device, served_format

    files = sorted(folder.glob("*.jpg"))
    info = find_export(str(model))
    serve = default_serve_config(device="cpu", format="auto", num_threads=None)
    serve = dataclasses.replace(serve, format=served_format(serve, info, pick_device(serve.device)))
    predictor = Predictor(info, serve)
    encoded = [path.read_bytes() for path in files]

    def decode_all() -> np.ndarray:
        return np.stack(
            [load_and_preprocess(data, info.image_size, info.crop, jpeg_scaling=info.jpeg_scaling) for data in encoded]
        )

    inputs = decode_all()
    cpu: dict[str, list[float]] = {"ceiling": [], "predict": [], "decode": []}

    def timed(name: str, work) -> float:
        wall, used = time.perf_counter(), time.process_time()
        work()
        wall, used = time.perf_counter() - wall, time.process_time() - used
        cpu[name].append(used * 1e3 / len(files))
        return len(files) / wall

    def ceiling() -> None:
        for start in range(0, len(inputs), BATCH):
            predictor(inputs[start : start + BATCH])

    with tempfile.TemporaryDirectory(prefix="faceattr-bench-predict-") as tmp:
        predict_cfg = _predict_config(model, folder, Path(tmp) / "predictions.csv")

        def predict() -> None:
            summary = predict_images(predict_cfg)
            if summary["answered"] != len(files):
                raise RuntimeError(f"predict.py answered {summary['answered']} of {len(files)} photos")

        log(f"{len(files)} photos, {repetitions} repetitions, {serve.format} ...")
        img_s = interleaved(
            {
                "ceiling": lambda: timed("ceiling", ceiling),
                "predict": lambda: timed("predict", predict),
                "decode": lambda: timed("decode", decode_all),
            },
            repetitions,
        )
    for name in cpu:
        cpu[name] = cpu[name][1:]  # the warm-up repetition
    pairs = list(zip(img_s["predict"], img_s["ceiling"]))
    cpu_pairs = list(zip(cpu["ceiling"], cpu["predict"]))
    return {
        "model": {"tag": info.tag, "image_size": list(info.image_size), "format": serve.format},
        "photos": len(files),
        "img_s": {name: round(median(values), 1) for name, values in img_s.items()},
        "cpu_ms_per_photo": {name: round(median(values), 3) for name, values in cpu.items()},
        "reps_img_s": {name: [round(v, 1) for v in values] for name, values in img_s.items()},
        "predict_vs_ceiling": round(median(ratio(a, b) for a, b in pairs), 3),
        "predict_vs_ceiling_cpu": round(median(ratio(a, b) for a, b in cpu_pairs), 3),
        "decode_share_of_model_cpu": round(ratio(median(cpu["decode"]), median(cpu["ceiling"])), 3),
    }


def measure(large: bool, photos: int, repetitions: int, log=print) -> dict[str, Any]:
    """A random quickstart (or ``large``) model exported into a temporary store, then :func:`compare` on ``photos``
    generated JPEGs."""
    cfg = common.quickstart_config(*(common.FULL.serve_large if large else ()))
    folder = common.bench_data(photos) / "img_align_celeba"
    with tempfile.TemporaryDirectory(prefix="faceattr-bench-predict-") as tmp_name:
        tmp = Path(tmp_name)
        log(f"exporting a random {cfg.model.backbone} at {cfg.data.image_size} ...")
        export_dir, export_s = export_random_model(cfg, tmp, serve_environment(tmp, {}))
        result = compare(export_dir, folder, repetitions, log=log)
    return {
        "command": " ".join(["python -m benchmarks.predict", *sys.argv[1:]]),
        "machine": machine_info(common.REPO),
        "backbone": str(cfg.model.backbone),
        "export_s": round(export_s, 1),
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--large", action="store_true", help="resnet50 at 128x128 instead of the quickstart model")
    parser.add_argument("--photos", type=int, default=512, help="generated 178x218 JPEGs to predict (default 512)")
    parser.add_argument("--repetitions", type=int, default=4, help="timed repetitions of each (default 4)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    result = measure(args.large, args.photos, args.repetitions)
    print(
        f"{result['backbone']} at {result['model']['image_size']} ({result['model']['format']}), "
        f"{result['photos']} photos: img/s {result['img_s']}, CPU ms per photo {result['cpu_ms_per_photo']}\n"
        f"predict_vs_ceiling {result['predict_vs_ceiling']} (wall), {result['predict_vs_ceiling_cpu']} (CPU); "
        f"decoding alone / the model alone (CPU): {result['decode_share_of_model_cpu']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
