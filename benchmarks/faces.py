"""Face detection and alignment (faceattr.faces): cost, landmark error, and what it changes in the predictions.

``OMP_WAIT_POLICY=PASSIVE python -m benchmarks.faces [--model TAG] [--repeats N] [--max-side PX] [--json PATH]``

On two public-domain portraits, skimage's astronaut (NASA, 512x512) and matplotlib's Grace Hopper (512x600):

1. **cost**: CPU milliseconds (``time.process_time``, one thread) per photo of detection, of alignment, and of the
   service's whole preprocessing (``load_faces``: decode, detect, align, crop and resize) against the centre crop
   (``load_and_preprocess``), for the portrait resized to 0.3 MP and 1 MP and pasted at its size into a 1 MP
   scene; the median of ``--repeats`` calls after two untimed ones; and which face sizes ``max_side`` 320, 480
   and 640 find in a 1 MP scene, at what cost;
2. **landmark error**: each portrait moved by known similarity transforms (shifts; scales 0.5 to 2; rotations of
   +-20 degrees; combinations; padding into a frame twice its size): the landmarks found there, mapped back, against
   those found in the untouched photo (NME: mean distance in % of the inter-ocular distance), and the mean absolute
   pixel difference of the 178x218 aligned crops (interior) against the centre crops' difference for the same moves;
3. **invariance** (with a model): the model's 40 probabilities on each moved photo against the untouched photo,
   mean |delta p|, with detection + alignment and with the centre crop. The model is ``--model`` (default
   ``faceattr``: its latest version) from the BentoML store (``BENTOML_HOME``), run as the service runs it
   (default serve settings: ONNX Runtime on a CPU), aligned onto the model's own ``face_template``.

Prints a summary; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceattr.faces import (
    CELEBA_TEMPLATE,
    FaceDetector,
    Template,
    align_face,
    apply_transform,
    invert_transform,
    warp,
)

#: (name, scale, degrees, offset in pixels, canvas size as a multiple of the moved photo's size).
TRANSFORMS: tuple[tuple[str, float, float, tuple[int, int], float], ...] = (
    ("shift -60,+40", 1.0, 0, (-60, 40), 1.5),
    ("shift +80,-70", 1.0, 0, (80, -70), 1.5),
    ("scale 0.5", 0.5, 0, (0, 0), 1.4),
    ("scale 0.71", 0.71, 0, (0, 0), 1.4),
    ("scale 1.41", 1.41, 0, (0, 0), 1.3),
    ("scale 2", 2.0, 0, (0, 0), 1.2),
    ("rotate -20", 1.0, -20, (0, 0), 1.4),
    ("rotate -10", 1.0, -10, (0, 0), 1.4),
    ("rotate +10", 1.0, 10, (0, 0), 1.4),
    ("rotate +20", 1.0, 20, (30, -20), 1.4),
    ("0.7x, +12, shift", 0.7, 12, (50, 50), 1.6),
    ("1.6x, -15, shift", 1.6, -15, (-50, 50), 1.3),
    ("pad into 2x frame", 1.0, 0, (0, 0), 2.0),
)
#: The interior of the aligned 178x218 frame compared between crops (rows, columns): the face, not the corners.
INTERIOR = (slice(40, 200), slice(30, 150))
GRAY = (128, 128, 128)


def portraits() -> dict[str, Image.Image]:
    import matplotlib

    try:
        import skimage.data
    except ImportError:
        sys.exit("error: the astronaut portrait comes with scikit-image: pip install -e '.[dev]'")
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {"astronaut": Image.fromarray(skimage.data.astronaut()), "hopper": Image.open(hopper).convert("RGB")}


def placement(size: tuple[int, int], scale: float, degrees: float, canvas: tuple[int, int], offset) -> np.ndarray:
    """Scale by ``scale`` and rotate by ``degrees`` (counter-clockwise on screen) about the photo's centre, which
    lands at the canvas centre + ``offset``: a 2x3 transform of pixel indices."""
    angle = math.radians(degrees)
    linear = scale * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    target = np.array([(canvas[0] - 1) / 2 + offset[0], (canvas[1] - 1) / 2 + offset[1]])
    return np.concatenate([linear, (target - linear @ centre)[:, None]], axis=1)


def moved(photo: Image.Image, scale: float, degrees: float, offset, room: float) -> tuple[Image.Image, np.ndarray]:
    canvas = (round(photo.size[0] * scale * room), round(photo.size[1] * scale * room))
    matrix = placement(photo.size, scale, degrees, canvas, offset)
    background = Image.new("RGB", canvas, GRAY)
    placed = warp(photo, matrix, canvas)
    mask = warp(Image.new("RGB", photo.size, (255, 255, 255)), matrix, canvas).convert("L")
    background.paste(placed, (0, 0), mask.point(lambda v: 255 if v > 250 else 0))
    return background, matrix


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def cpu_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median CPU milliseconds of ``fn`` (this process, all threads) over ``repeats`` calls after two untimed."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return round(1000 * statistics.median(times), 2)


def resized_to(photo: Image.Image, pixels: int) -> Image.Image:
    factor = math.sqrt(pixels / (photo.size[0] * photo.size[1]))
    return photo.resize((round(photo.size[0] * factor), round(photo.size[1] * factor)), Image.Resampling.BICUBIC)


def pasted_into(photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, GRAY)
    canvas.paste(photo, ((size[0] - photo.size[0]) // 2, (size[1] - photo.size[1]) // 2))
    return canvas


def measure_cost(detector: FaceDetector, photos: dict[str, Image.Image], repeats: int) -> dict[str, Any]:
    from faceattr.serve.images import ImageLimits, load_and_preprocess, load_faces

    results: dict[str, Any] = {}
    for name, photo in photos.items():
        for label, image in (
            ("0.3 MP portrait", resized_to(photo, 300_000)),
            ("1 MP portrait", resized_to(photo, 1_000_000)),
            ("1 MP scene (the portrait at its size in 1224x816)", pasted_into(photo, (1224, 816))),
        ):
            faces = detector(image)
            if not faces:
                results[f"{name}, {label}"] = {"faces": 0}
                continue
            data = jpeg(image)
            landmarks = faces[0].landmarks
            results[f"{name}, {label}"] = {
                "size": list(image.size),
                "faces": len(faces),
                "detect_ms": cpu_ms(lambda image=image: detector(image), repeats),
                "align_ms": cpu_ms(lambda image=image, lm=landmarks: align_face(image, lm), repeats),
                "load_faces_ms": cpu_ms(
                    lambda data=data: load_faces(data, (64, 64), (178, 178), ImageLimits(), detector), repeats
                ),
                "centre_crop_ms": cpu_ms(
                    lambda data=data: load_and_preprocess(data, (64, 64), (178, 178), ImageLimits()), repeats
                ),
            }
    return results


def measure_small_faces(photos: dict[str, Image.Image], repeats: int) -> dict[str, Any]:
    """Which face sizes each ``max_side`` finds: the portrait shrunk into a 1224x816 (1 MP) scene, and its cost."""
    results: dict[str, Any] = {}
    scenes: dict[str, Image.Image] = {}
    for name, photo in photos.items():
        reference = FaceDetector()(photo)[0].landmarks
        iod = float(np.linalg.norm(np.subtract(reference[1], reference[0])))
        for scale in (0.25, 0.35, 0.5, 0.7):
            small = photo.resize((round(photo.size[0] * scale), round(photo.size[1] * scale)), Image.LANCZOS)
            scenes[f"{name} inter-ocular {iod * scale:.0f} px"] = pasted_into(small, (1224, 816))
    for max_side in (320, 480, 640):
        detector = FaceDetector(max_side=max_side, threads=1)
        found = {label: len(detector(scene)) for label, scene in scenes.items()}
        scene = pasted_into(next(iter(photos.values())), (1224, 816))
        results[str(max_side)] = {"faces_found": found, "detect_ms_1mp": cpu_ms(lambda: detector(scene), repeats)}
    return results


def nme_percent(found, reference) -> float:
    found, reference = np.asarray(found), np.asarray(reference)
    iod = np.linalg.norm(reference[1] - reference[0])
    return float(100 * np.linalg.norm(found - reference, axis=1).mean() / iod)


def centre_frame(image: Image.Image) -> np.ndarray:
    """The largest centred 178:218 region resized to 178x218: the centre crop's aligned frame (as the service)."""
    from faceattr.preprocess import ALIGNED_SIZE, preprocess

    return preprocess(np.asarray(image.convert("RGB")), ALIGNED_SIZE, None).astype(float)


def measure_landmarks(detector: FaceDetector, photos: dict[str, Image.Image]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, photo in photos.items():
        reference = detector(photo)[0].landmarks
        reference_crop = np.asarray(align_face(photo, reference), dtype=float)[INTERIOR]
        reference_centre = centre_frame(photo)[INTERIOR]
        cases: dict[str, Any] = {}
        for label, scale, degrees, offset, room in TRANSFORMS:
            image, matrix = moved(photo, scale, degrees, offset, room)
            faces = detector(image)
            centre_diff = float(np.abs(centre_frame(image)[INTERIOR] - reference_centre).mean())
            if not faces:
                cases[label] = {"faces": 0, "centre_crop_diff": round(centre_diff, 2)}
                continue
            back = apply_transform(invert_transform(matrix), faces[0].landmarks)
            crop = np.asarray(align_face(image, faces[0].landmarks), dtype=float)[INTERIOR]
            cases[label] = {
                "faces": len(faces),
                "nme_percent": round(nme_percent(back, reference), 2),
                "aligned_crop_diff": round(float(np.abs(crop - reference_crop).mean()), 2),
                "centre_crop_diff": round(centre_diff, 2),
            }
        found = [c for c in cases.values() if c["faces"]]
        results[name] = {
            "inter_ocular_px": round(float(np.linalg.norm(np.subtract(reference[1], reference[0]))), 1),
            "cases": cases,
            "missed": [label for label, c in cases.items() if not c["faces"]],
            "nme_mean_percent": round(statistics.mean(c["nme_percent"] for c in found), 2) if found else None,
            "nme_max_percent": round(max(c["nme_percent"] for c in found), 2) if found else None,
            "aligned_crop_diff_mean": round(statistics.mean(c["aligned_crop_diff"] for c in found), 2)
            if found
            else None,
            "centre_crop_diff_mean": round(statistics.mean(c["centre_crop_diff"] for c in cases.values()), 2),
        }
    return results


def load_predictor(tag: str):
    """The service's Predictor of model ``tag`` (default serve settings), its ModelInfo and its face template."""
    from faceattr.serve.config import load_serve_config
    from faceattr.serve.runtime import Predictor, served_model, stored_model

    config = dataclasses.replace(load_serve_config({}), model=tag, num_threads=1)
    exact = str(stored_model(config).tag)
    config, info = served_model(config, exact)
    points = info.face_template
    template = Template(points, info.contract.face_template_source or "model contract") if points else CELEBA_TEMPLATE
    return Predictor(info, config), info, template


def measure_invariance(detector: FaceDetector, photos: dict[str, Image.Image], tag: str) -> dict[str, Any]:
    from faceattr.serve.images import ImageLimits, load_faces

    predictor, info, template = load_predictor(tag)

    def probabilities(data: bytes, use_detector: bool) -> np.ndarray | None:
        prepared = load_faces(
            data, info.image_size, info.crop, ImageLimits(), detector if use_detector else None, template
        )
        if not prepared:
            return None
        return predictor(prepared[0].pixels[None])[0]

    results: dict[str, Any] = {"model": info.tag, "template": template.source, "per_photo": {}}
    totals: dict[str, list[float]] = {"detect_align": [], "centre_crop": []}
    for name, photo in photos.items():
        untouched = png(photo)
        base = {method: probabilities(untouched, method == "detect_align") for method in totals}
        cases: dict[str, Any] = {}
        for label, scale, degrees, offset, room in TRANSFORMS:
            data = png(moved(photo, scale, degrees, offset, room)[0])
            case = {}
            for method in totals:
                p = probabilities(data, method == "detect_align")
                if p is None or base[method] is None:
                    case[method] = None
                    continue
                delta = float(np.abs(p - base[method]).mean())
                case[method] = round(delta, 4)
                totals[method].append(delta)
            cases[label] = case
        results["per_photo"][name] = cases
    results["mean_abs_delta_p"] = {m: round(statistics.mean(v), 4) if v else None for m, v in totals.items()}
    results["max_abs_delta_p"] = {m: round(max(v), 4) if v else None for m, v in totals.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faces", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="faceattr", help="BentoML model tag for the invariance figures")
    parser.add_argument("--no-model", action="store_true", help="skip the invariance figures")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per cost figure (median)")
    parser.add_argument("--max-side", type=int, default=320, help="FaceDetector(max_side=...)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

    from benchmarks.common import REPO
    from benchmarks.timing import machine_info

    detector = FaceDetector(max_side=args.max_side, threads=1)
    photos = portraits()
    report: dict[str, Any] = {
        "command": "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.faces " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(REPO),
        "detector": repr(detector),
    }
    report["cost"] = measure_cost(detector, photos, args.repeats)
    for label, figures in report["cost"].items():
        if figures.get("faces"):
            print(
                f"cost  {label:<60} detect {figures['detect_ms']:6.1f} ms  align {figures['align_ms']:5.2f} ms  "
                f"load_faces {figures['load_faces_ms']:6.1f} ms  (centre crop {figures['centre_crop_ms']:5.1f} ms)"
            )
        else:
            print(f"cost  {label:<60} no face found")
    report["small_faces"] = measure_small_faces(photos, args.repeats)
    for max_side, figures in report["small_faces"].items():
        sizes = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in figures["faces_found"].items())
        print(f"max_side {max_side}: detect {figures['detect_ms_1mp']:5.1f} ms at 1 MP; found {sizes}")
    report["landmarks"] = measure_landmarks(detector, photos)
    for name, figures in report["landmarks"].items():
        print(
            f"landmarks {name:<10} NME mean {figures['nme_mean_percent']}% max {figures['nme_max_percent']}% "
            f"(inter-ocular {figures['inter_ocular_px']} px; missed: {', '.join(figures['missed']) or 'none'}); "
            f"aligned crop |diff| {figures['aligned_crop_diff_mean']} vs centre crop {figures['centre_crop_diff_mean']}"
        )
    if not args.no_model:
        from faceattr.serve.runtime import ModelError

        try:
            report["invariance"] = measure_invariance(detector, photos, args.model)
        except ModelError as exc:
            print(f"invariance: skipped: {exc}")
            report["invariance"] = {"skipped": str(exc)}
        else:
            inv = report["invariance"]
            print(
                f"invariance ({inv['model']}, template: {inv['template']}): mean |delta p| over 40 attributes, "
                f"{len(TRANSFORMS)} moves x {len(photos)} photos: detect+align "
                f"{inv['mean_abs_delta_p']['detect_align']} (max {inv['max_abs_delta_p']['detect_align']}), "
                f"centre crop {inv['mean_abs_delta_p']['centre_crop']} (max {inv['max_abs_delta_p']['centre_crop']})"
            )
    if args.json:
        from faceattr.atomic import write_json

        write_json(args.json, report)
        print(f"wrote {args.json}")
    else:
        json.dumps(report, default=str)  # fails here, not in a later --json run, if a figure is not serializable
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
