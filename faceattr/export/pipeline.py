"""The export entry: checkpoint -> artefacts (TorchScript, ONNX) -> parity check -> BentoML model store.

``export(cfg)`` is what ``python export.py`` runs (see ``conf/export.yaml``):

1. resolve ``ckpt`` (file, run dir or sweep dir) and rebuild the model from the checkpoint alone;
2. preprocess the run's validation images the way the service will, run the Lightning model on them, calibrate
   per-attribute thresholds and compute validation metrics;
3. write each format to ``<run dir>/export/`` and check it against the Lightning model on validation images
   (fails above ``parity.atol``);
4. save a new version of the BentoML model ``name`` with the artefacts, ``faceattr.json`` and ``config.yaml``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

import faceattr
from faceattr.errors import UserError
from faceattr.export import build
from faceattr.export.calibrate import check_run_config, f1_thresholds, predict, validation_metrics, validation_set
from faceattr.export.options import check_options
from faceattr.export.resolve import resolve_checkpoint
from faceattr.export.store import check_model_name, save_model
from faceattr.serve.images import ALIGNED_SIZE

FILE_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx"}
METADATA_FILE = "faceattr.json"
CONFIG_FILE = "config.yaml"


def _formats(cfg: DictConfig) -> list[str]:
    formats = list(cfg.export.get("formats") or [])
    unknown = [f for f in formats if f not in FILE_NAMES]
    if not formats or unknown:
        raise UserError(f"export.formats={formats}: expected a non-empty list of {', '.join(FILE_NAMES)}")
    return list(dict.fromkeys(formats))


def _output_dir(cfg: DictConfig, checkpoint: Path, run_dir: Path | None) -> Path:
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir)).expanduser()
    return (run_dir if run_dir is not None else checkpoint.parent) / "export"


def _parity(run, inputs: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest |difference| between ``run(inputs)`` and ``reference``: all images in one batch, then the first
    three one at a time (a batch size other than the traced one)."""
    floats = inputs.float().div(255)
    diff = float((run(floats) - reference).abs().max()) if len(floats) else 0.0
    for i in range(min(3, len(floats))):
        diff = max(diff, float((run(floats[i : i + 1]) - reference[i : i + 1]).abs().max()))
    return diff


def _runner(fmt: str, path: Path):
    if fmt == "torchscript":
        module, _ = build.load_torchscript(path)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x).float()

        return run
    session = build.onnx_session(path)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([build.OUTPUT_NAME], {build.INPUT_NAME: x.numpy()})[0])

    return run


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export one checkpoint; returns the summary also written to ``<output dir>/faceattr.json``."""
    started = time.time()
    check_options(cfg)  # unknown keys and bad values: one line, before anything slow
    formats = _formats(cfg)
    if cfg.get("store", True):
        check_model_name(cfg.name)  # fail before the slow part
    resolved = resolve_checkpoint(cfg.ckpt)
    print(f"checkpoint:  {resolved.checkpoint}")
    print(f"  picked:    {resolved.reason}")

    module = build.load_module(resolved.checkpoint)
    hparams = dict(module.hparams)
    if resolved.run_config:
        check_run_config(hparams, resolved.run_config, f"{resolved.run_dir}/config.yaml")
    image_size = list(hparams["image_size"])
    crop = None if hparams.get("crop") is None else list(hparams["crop"])
    attributes = list(hparams["attributes"])
    print(f"model:       {hparams['backbone']}, {len(attributes)} attributes, input {image_size[0]}x{image_size[1]}, "
          f"crop {crop} of the aligned {ALIGNED_SIZE[1]}x{ALIGNED_SIZE[0]} frame")

    # Validation images: parity inputs, thresholds and metrics.
    parity_cfg, calib_cfg = cfg.parity, cfg.calibration
    num_parity = int(parity_cfg.num_images)
    validation, note = validation_set(hparams, resolved.run_config, cfg.get("data_root"))
    if validation is not None:
        limit = calib_cfg.get("max_images")
        count = len(validation.paths) if limit is None else min(len(validation.paths), max(int(limit), num_parity))
        t0 = time.time()
        inputs, probs = predict(
            module, validation.paths[:count], image_size, crop, int(calib_cfg.batch_size),
            int(calib_cfg.num_workers), keep=num_parity,
        )
        labels = validation.labels[:count]
        parity_source = f"{len(inputs)} validation images"
        print(f"validation:  {count} images of {note} ({time.time() - t0:.1f}s through the Lightning model)")
    else:
        print(f"warning:     no validation data: {note}; thresholds stay at {calib_cfg.default_threshold} and the "
              "parity check uses random images")
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randint(0, 256, (num_parity, 3, *image_size), dtype=torch.uint8, generator=generator)
        with torch.inference_mode():
            probs = torch.sigmoid(module(inputs.float().div(255))).float()
        labels = torch.empty(0, len(attributes), dtype=torch.uint8)
        parity_source = f"{len(inputs)} random images (no validation data)"
    reference = probs[: len(inputs)]

    use_calibration = validation is not None and calib_cfg.get("max_images", None) != 0 and len(labels) > 0
    if use_calibration:
        thresholds, calibrated = f1_thresholds(probs, labels, float(calib_cfg.default_threshold))
        metrics = validation_metrics(probs, labels, thresholds)
        method = f"F1-optimal per attribute on {len(labels)} validation images"
    else:
        thresholds = torch.full((len(attributes),), float(calib_cfg.default_threshold))
        calibrated = torch.zeros(len(attributes), dtype=torch.bool)
        metrics = validation_metrics(probs, labels, thresholds) if len(labels) else {}
        method = "default (no validation data)" if validation is None else "default (calibration.max_images=0)"
    uncalibrated = [name for name, ok in zip(attributes, calibrated.tolist()) if not ok]
    print(f"thresholds:  {method}; {int(calibrated.sum())}/{len(attributes)} calibrated"
          + (f" (default {calib_cfg.default_threshold} for: {', '.join(uncalibrated[:8])}"
             f"{', ...' if len(uncalibrated) > 8 else ''})" if uncalibrated and use_calibration else ""))
    if metrics:
        print("  val:       " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in metrics.items()))

    record = resolved.run_record
    metadata: dict[str, Any] = {
        "faceattr_version": faceattr.__version__,
        "attributes": attributes,
        "num_attributes": len(attributes),
        "image_size": image_size,
        "crop": crop,
        "aligned_size": list(ALIGNED_SIZE),
        "input": {"name": build.INPUT_NAME, "dtype": "float32", "shape": ["N", 3, *image_size],
                  "layout": "NCHW RGB", "range": [0.0, 1.0]},
        "output": {"name": build.OUTPUT_NAME, "dtype": "float32", "shape": ["N", len(attributes)],
                   "meaning": "sigmoid probabilities, one per attribute"},
        "mean": list(hparams["mean"]),
        "std": list(hparams["std"]),
        "thresholds": {name: round(float(t), 6) for name, t in zip(attributes, thresholds)},
        "threshold_method": method,
        "uncalibrated_attributes": uncalibrated,
        "backbone": hparams["backbone"],
        "num_parameters": sum(p.numel() for p in module.net.parameters()),
        "metrics": {
            "validation": metrics,
            "run": {k: record.get(k) for k in ("monitor", "best_score", "val_auroc_best", "epochs") if k in record},
            "test": dict(record.get("test") or {}),
        },
        "source": {
            "checkpoint": str(resolved.checkpoint.resolve()),
            "run_dir": None if resolved.run_dir is None else str(resolved.run_dir.resolve()),
            "picked": resolved.reason,
            "validation_data": None if validation is None else str(validation.root.resolve()),
        },
        "hparams": {k: v for k, v in hparams.items() if k not in ("attributes",)},
    }

    out_dir = _output_dir(cfg, resolved.checkpoint, resolved.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    example = inputs[:2].float().div(255) if len(inputs) >= 2 else torch.rand(2, 3, *image_size)
    exported = build.probability_model(module)
    files: dict[str, Path] = {}
    parity: dict[str, Any] = {}
    atol = float(parity_cfg.atol)
    for fmt in formats:
        path = out_dir / FILE_NAMES[fmt]
        t0 = time.time()
        embedded = dict(metadata, format=fmt)
        if fmt == "torchscript":
            build.export_torchscript(exported, example, path, embedded)
        else:
            build.export_onnx(exported, example, path, embedded, cfg.export.get("opset"))
        seconds = time.time() - t0
        diff = _parity(_runner(fmt, path), inputs, reference)
        parity[fmt] = {"max_abs_diff": diff, "atol": atol, "images": parity_source, "export_s": round(seconds, 2)}
        print(f"{fmt + ':':<12} {path} ({path.stat().st_size / 1e6:.2f} MB, {seconds:.1f}s); parity vs Lightning "
              f"on {parity_source}: max |diff| = {diff:.2e} (atol {atol:.0e})")
        if not diff <= atol:  # also catches NaN
            raise UserError(
                f"parity check failed for {fmt}: max |probability difference| vs the Lightning model = {diff:.3e} > "
                f"parity.atol={atol:g} on {parity_source}; {path} is NOT saved to the model store"
            )
        files[FILE_NAMES[fmt]] = path
    metadata["formats"] = {fmt: FILE_NAMES[fmt] for fmt in formats}
    metadata["parity"] = parity

    run_config = resolved.run_config
    metadata_path = out_dir / METADATA_FILE
    config_path = out_dir / CONFIG_FILE
    export_cfg = OmegaConf.to_container(cfg, resolve=True)
    config_path.write_text(yaml.safe_dump({"train": run_config, "export": export_cfg}, sort_keys=False))
    tag = None
    if cfg.get("store", True):
        store_meta = dict(metadata, config=yaml.safe_dump(run_config, sort_keys=False) if run_config else "",
                          export_config=export_cfg)
        store_labels = {"backbone": str(hparams["backbone"]), "image_size": f"{image_size[0]}x{image_size[1]}",
                   "formats": "+".join(formats), "project": "faceattr"}
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
        tag, store_path = save_model(str(cfg.name), {**files, METADATA_FILE: metadata_path,
                                                     CONFIG_FILE: config_path}, store_labels, store_meta)
        metadata["tag"] = tag
        print(f"bentoml:     saved {tag} ({store_path})")
    metadata["export_s"] = round(time.time() - started, 2)
    metadata["host"] = {"python": platform.python_version(), "torch": torch.__version__}
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"files:       {out_dir} ({', '.join(sorted(files))}, {METADATA_FILE}, {CONFIG_FILE})")
    print(f"done in {metadata['export_s']:.1f}s")
    if tag:
        hint = "" if str(cfg.name) == "faceattr" else f"FACEATTR_SERVE_MODEL={tag} "
        onnx = "FACEATTR_SERVE_FORMAT=onnx " if formats == ["onnx"] else ""
        print(f"serve it:    {hint}{onnx}bentoml serve   (from the repo root; see docs/serving.md)")
    return metadata
