"""``data.align=detect``: the one-off cost of detecting and aligning training photos, and what it does to a model.

``OMP_WAIT_POLICY=PASSIVE python -m benchmarks.align_training [--photos N] [--invariance] [--epochs E] [--json PATH]``

Photos: ``--photos`` faces of the generated CelebA data (:mod:`faceattr.data.synthetic`), each scaled (1.1-2x),
rotated (+-15 degrees) and put at a random place of a canvas of random size (320-900 pixels a side), saved as
JPEG beside a ``labels.csv`` of three attributes: an ordinary photo folder (``data=folder``).

1. **cost**: the split cached by :func:`faceattr.data.cache.cached` (one process, ``num_workers=0``) with
   ``align=detect`` and with ``align=none`` (the photo's centred frame): wall ms per photo of each build (decode,
   [detect, align,] crop, resize, write) and their difference, the one-off price of alignment; how many photos had
   no face; the second run's wall ms per photo (the cache read, no detection) and its detector calls (0).
2. **invariance** (``--invariance``): two tiny models (``model=tiny_resnet`` at 64x64, ``--epochs`` epochs) trained
   by ``train.py data=folder`` on those photos, with ``data.align=detect`` and without; for each, the figure of
   ``benchmarks.faces`` (docs/serving.md, "Invariance of the predictions"): mean |delta p| of the model's
   probabilities between each of the 13 moves of the two real portraits and the untouched portrait, with the
   service's detection + alignment (``face=detect``) and with the centre crop (``face=center``). The model runs
   eagerly from its checkpoint on the service's model inputs (:func:`faceattr.serve.images.load_faces`). |delta p|
   grows with how far a model's probabilities stray from the base rates, so each model's validation AUROC is given.

Prints a summary; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ATTRIBUTES = ("Smiling", "Male", "Eyeglasses")
SIZE = 64


def make_photos(root: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` unaligned photos under ``root`` and their ``labels.csv``; returns the file names."""
    from faceattr.data.synthetic import generate_celeba

    faces = generate_celeba(root / "aligned", num_images=count, seed=seed)
    lines = (faces / "list_attr_celeba.txt").read_text().splitlines()
    header = lines[1].split()
    columns = [header.index(name) + 1 for name in ATTRIBUTES]
    rng = np.random.default_rng(seed)
    names, rows = [], []
    for line in lines[2:]:
        parts = line.split()
        face = Image.open(faces / "img_align_celeba" / parts[0]).convert("RGB")
        scale, degrees = rng.uniform(1.1, 2.0), rng.uniform(-15, 15)
        size = (round(face.size[0] * scale), round(face.size[1] * scale))
        moved = face.resize(size, Image.Resampling.BICUBIC).rotate(degrees, Image.Resampling.BICUBIC, expand=True)
        mask = Image.new("L", size, 255).rotate(degrees, Image.Resampling.BICUBIC, expand=True)
        canvas_size = (int(rng.integers(max(320, moved.size[0]), 900)), int(rng.integers(max(320, moved.size[1]), 900)))
        colour = tuple(int(v) for v in rng.integers(40, 220, 3))
        canvas = Image.new("RGB", canvas_size, colour)
        corner = (
            int(rng.integers(0, canvas_size[0] - moved.size[0] + 1)),
            int(rng.integers(0, canvas_size[1] - moved.size[1] + 1)),
        )
        canvas.paste(moved, corner, mask)
        name = f"photos/{parts[0]}"
        (root / "photos").mkdir(exist_ok=True)
        canvas.save(root / name, "JPEG", quality=90)
        names.append(name)
        rows.append([name, *(parts[c] for c in columns)])
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *ATTRIBUTES])
        writer.writerows(rows)
    return names


def measure_cost(root: Path, names: list[str], work: Path) -> dict[str, Any]:
    from faceattr.data.cache import cached
    from faceattr.data.celeba import CelebAImages
    from faceattr.data.transforms import ImageLoader
    from faceattr.faces import FaceDetector

    calls = [0]
    real = FaceDetector.__call__

    def counted(self, image):
        calls[0] += 1
        return real(self, image)

    FaceDetector.__call__ = counted

    def build(align: str, folder: str) -> tuple[float, Any]:
        loader = ImageLoader(SIZE, 178, align=align)
        source = CelebAImages(
            root, np.asarray(names, dtype=np.bytes_), np.zeros((len(names), 3), dtype=np.uint8), None, False, loader
        )
        started = time.perf_counter()
        images = cached(source, work / folder, "train", (SIZE, SIZE), (178, 178))
        return 1000 * (time.perf_counter() - started) / len(names), images

    try:
        detect_ms, aligned = build("detect", "detect")
        detections = calls[0]
        centre_ms, _ = build("none", "none")
        calls[0] = 0
        again_ms, _ = build("detect", "detect")
        second_calls = calls[0]
    finally:
        FaceDetector.__call__ = real
    return {
        "photos": len(names),
        "build_ms_per_photo": {"align=detect": round(detect_ms, 2), "align=none": round(centre_ms, 2)},
        "alignment_ms_per_photo": round(detect_ms - centre_ms, 2),
        "detector_calls_first_run": detections,
        "photos_without_a_face": len(names) - len(aligned),
        "second_run_ms_per_photo": round(again_ms, 3),
        "detector_calls_second_run": second_calls,
    }


def train(root: Path, align: str, epochs: int, work: Path) -> tuple[Path, float | None]:
    """The best checkpoint of a tiny ``train.py data=folder`` run on ``root``, and its validation AUROC."""
    from benchmarks.common import REPO

    run_dir = work / f"run-{align}"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "data=folder",
        f"data.root={root}",
        f"data.align={align}",
        f"data.cache={work / f'cache-{align}'}",
        "data.split_record=null",  # the seeded split, made afresh (the same in both runs)
        "model=tiny_resnet",
        f"data.image_size={SIZE}",
        "data.num_workers=0",
        "data.batch_size=32",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        "callbacks.progress_bar=null",
        "callbacks.pictures=null",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "FACEATTR_CACHE": str(work / "faceattr-cache"), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    from faceattr.run_finder import best_of_run

    best = best_of_run(run_dir)
    return best.checkpoint, best.score


def measure_invariance(checkpoint: Path) -> dict[str, Any]:
    import torch

    from benchmarks.faces import TRANSFORMS, moved, png, portraits
    from faceattr.faces import FaceDetector
    from faceattr.model.loading import load_module
    from faceattr.serve.images import ImageLimits, load_faces

    module, detector = load_module(checkpoint), FaceDetector(threads=1)
    size, crop = tuple(module.hparams.image_size), module.hparams.crop

    def probabilities(data: bytes, detect: bool) -> np.ndarray | None:
        prepared = load_faces(data, size, crop, ImageLimits(), detector if detect else None)
        if not prepared:
            return None
        with torch.no_grad():
            return torch.sigmoid(module(torch.from_numpy(prepared[0].pixels[None]).float().div(255)))[0].numpy()

    totals: dict[str, list[float]] = {"detect_align": [], "centre_crop": []}
    for photo in portraits().values():
        base = {method: probabilities(png(photo), method == "detect_align") for method in totals}
        for _, scale, degrees, offset, room in TRANSFORMS:
            data = png(moved(photo, scale, degrees, offset, room)[0])
            for method in totals:
                p = probabilities(data, method == "detect_align")
                if p is not None and base[method] is not None:
                    totals[method].append(float(np.abs(p - base[method]).mean()))
    return {
        "face_alignment": module.hparams.get("face_alignment"),
        "mean_abs_delta_p": {m: round(statistics.mean(v), 4) if v else None for m, v in totals.items()},
        "max_abs_delta_p": {m: round(max(v), 4) if v else None for m, v in totals.items()},
        "cases": {m: len(v) for m, v in totals.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.align_training", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300, help="generated photos")
    parser.add_argument("--invariance", action="store_true", help="also train two tiny models and compare them")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each tiny model")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args(argv)

    from benchmarks.common import REPO
    from benchmarks.timing import machine_info

    report: dict[str, Any] = {
        "command": "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.align_training " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(REPO),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "folder"
        names = make_photos(root, args.photos)
        report["cost"] = cost = measure_cost(root, names, work)
        print(
            f"cost  {cost['photos']} photos: build {cost['build_ms_per_photo']['align=detect']} ms/photo with "
            f"align=detect, {cost['build_ms_per_photo']['align=none']} with align=none: alignment "
            f"{cost['alignment_ms_per_photo']} ms/photo once; {cost['photos_without_a_face']} without a face; second "
            f"run {cost['second_run_ms_per_photo']} ms/photo, {cost['detector_calls_second_run']} detector calls"
        )
        if args.invariance:
            report["invariance"] = {}
            for align in ("none", "detect"):
                checkpoint, score = train(root, align, args.epochs, work)
                figures = {"val_auroc": None if score is None else round(score, 3), **measure_invariance(checkpoint)}
                report["invariance"][f"align={align}"] = figures
                mean, worst = figures["mean_abs_delta_p"], figures["max_abs_delta_p"]
                print(
                    f"invariance  trained with align={align} (val AUROC {figures['val_auroc']}): mean |delta p| "
                    f"face=detect {mean['detect_align']} (max {worst['detect_align']}), "
                    f"face=center {mean['centre_crop']} (max {worst['centre_crop']})"
                )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
