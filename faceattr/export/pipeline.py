"""The export entry: checkpoint -> artefacts (TorchScript, ONNX) -> parity check -> BentoML model store.

``export(cfg)`` is what ``python export.py`` runs (see ``conf/export.yaml``):

1. resolve ``ckpt`` (file, run dir or sweep dir) and rebuild the model from the checkpoint alone;
2. preprocess the run's validation images the way the service will, run the Lightning model on them, calibrate
   per-attribute thresholds and compute validation metrics (optimistic at the calibrated thresholds: tuned there);
3. measure the service's decision rule (those thresholds) on the run's whole test split (``test_metrics``);
4. write each format to ``<run dir>/export/`` and check it against the Lightning model on validation images
   (fails above ``parity.atol``);
5. save a new version of the BentoML model ``name`` with the artefacts, ``faceattr.json`` and ``config.yaml``.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

import faceattr
from faceattr.atomic import remove_stale_temporaries, write_json, write_text
from faceattr.errors import UserError
from faceattr.export import build
from faceattr.export.calibrate import check_run_config, f1_thresholds, predict, split_metrics, split_set
from faceattr.export.options import check_options
from faceattr.export.resolve import Resolved, resolve_checkpoint
from faceattr.export.store import check_model_name, save_model
from faceattr.faces import CELEBA_TEMPLATE, estimate_template, find_landmark_file
from faceattr.layout import ARTEFACT_FILES, CHECKPOINT_DIR, EXPORT_CONFIG, EXPORT_DIR, METADATA_FILE
from faceattr.serve.images import ALIGNED_SIZE

log = logging.getLogger(__name__)


def _formats(cfg: DictConfig) -> list[str]:
    formats = list(cfg.export.get("formats") or [])
    unknown = [f for f in formats if f not in ARTEFACT_FILES]
    if not formats or unknown:
        raise UserError(f"export.formats={formats}: expected a non-empty list of {', '.join(ARTEFACT_FILES)}")
    return list(dict.fromkeys(formats))


def _output_dir(cfg: DictConfig, checkpoint: Path, run_dir: Path | None) -> Path:
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir)).expanduser()
    return (run_dir if run_dir is not None else checkpoint.parent) / EXPORT_DIR


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


@dataclass
class Calibration:
    """What the validation split gave: parity inputs and their reference outputs, thresholds, metrics."""

    inputs: torch.Tensor  # uint8 (N, 3, h, w): parity-check images
    reference: torch.Tensor  # the Lightning model's probabilities on ``inputs``
    parity_source: str
    thresholds: torch.Tensor
    calibrated: torch.Tensor  # bool per attribute
    method: str
    metrics: dict[str, Any]


def _describe(hparams: dict[str, Any]) -> tuple[list[int], list[int] | None, list[str]]:
    image_size = list(hparams["image_size"])
    crop = None if hparams.get("crop") is None else list(hparams["crop"])
    attributes = list(hparams["attributes"])
    log.info(
        f"model:       {hparams['backbone']}, {len(attributes)} attributes, input {image_size[0]}x{image_size[1]}, "
        f"crop {crop} of the aligned {ALIGNED_SIZE[1]}x{ALIGNED_SIZE[0]} frame"
    )
    return image_size, crop, attributes


def _calibrate(cfg: DictConfig, module, hparams: dict[str, Any], resolved: Resolved) -> Calibration:
    """Step 2: the Lightning model on the validation images -> parity references, thresholds, validation metrics."""
    image_size, crop, attributes = list(hparams["image_size"]), hparams.get("crop"), list(hparams["attributes"])
    calib_cfg, num_parity = cfg.calibration, int(cfg.parity.num_images)
    default = float(calib_cfg.default_threshold)
    validation, note = split_set(hparams, resolved.run_config, cfg.get("data_root"), "valid")
    if validation is None:
        log.warning(
            f"warning:     no validation data: {note}; thresholds stay at {default} and the parity check uses "
            "random images"
        )
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randint(0, 256, (num_parity, 3, *image_size), dtype=torch.uint8, generator=generator)
        with torch.inference_mode():
            reference = torch.sigmoid(module(inputs.float().div(255))).float()
        return Calibration(
            inputs,
            reference,
            f"{len(inputs)} random images (no validation data)",
            torch.full((len(attributes),), default),
            torch.zeros(len(attributes), dtype=torch.bool),
            "default (no validation data)",
            {},
        )

    limit = calib_cfg.get("max_images")
    count = len(validation.paths) if limit is None else min(len(validation.paths), max(int(limit), num_parity))
    t0 = time.time()
    inputs, probs = predict(
        module,
        validation.paths[:count],
        image_size,
        crop,
        int(calib_cfg.batch_size),
        int(calib_cfg.num_workers),
        keep=num_parity,
        jpeg_scaling=bool(hparams.get("jpeg_scaling", False)),
    )
    labels = validation.labels[:count]
    log.info(f"validation:  {count} images of {note} ({time.time() - t0:.1f}s through the Lightning model)")
    if limit != 0 and len(labels) > 0:
        thresholds, calibrated = f1_thresholds(probs, labels, default)
        method = f"F1-optimal per attribute on {len(labels)} validation images"
    else:
        thresholds = torch.full((len(attributes),), default)
        calibrated = torch.zeros(len(attributes), dtype=torch.bool)
        method = "default (calibration.max_images=0)"
    metrics = split_metrics(probs, labels, thresholds) if len(labels) else {}
    if "at_thresholds" in metrics:
        # Tuned on these very images: an optimistic figure, labelled as such.
        metrics["at_thresholds_tuned_here"] = metrics.pop("at_thresholds")
    uncalibrated = [name for name, ok in zip(attributes, calibrated.tolist()) if not ok]
    log.info(
        f"thresholds:  {method}; {int(calibrated.sum())}/{len(attributes)} calibrated"
        + (
            f" (default {default} for: {', '.join(uncalibrated[:8])}{', ...' if len(uncalibrated) > 8 else ''})"
            if uncalibrated and limit != 0
            else ""
        )
    )
    if metrics:
        log.info(f"  val:       {_summary(metrics)} (calibrated thresholds tuned on these images: optimistic)")
    return Calibration(
        inputs, probs[: len(inputs)], f"{len(inputs)} validation images", thresholds, calibrated, method, metrics
    )


def _summary(metrics: dict[str, Any]) -> str:
    parts = [f"auroc={metrics['auroc']:.4f}"] if "auroc" in metrics else []
    for key, values in metrics.items():
        if isinstance(values, dict):
            parts.append(f"{key}: " + " ".join(f"{k}={v:.4f}" for k, v in values.items()))
    return ", ".join(parts) + f" ({metrics.get('num_images', 0)} images)"


def _test_metrics(
    cfg: DictConfig, module, hparams: dict[str, Any], resolved: Resolved, thresholds: torch.Tensor
) -> dict[str, Any]:
    """Step 3: the service's decision rule on the run's whole test split (empty when off or there is no data)."""
    if not cfg.get("test_metrics", True):
        return {}
    test, note = split_set(hparams, resolved.run_config, cfg.get("data_root"), "test")
    if test is None:
        log.info(f"test:        skipped: {note}")
        return {}
    t0 = time.time()
    _, probs = predict(
        module,
        test.paths,
        list(hparams["image_size"]),
        hparams.get("crop"),
        int(cfg.calibration.batch_size),
        int(cfg.calibration.num_workers),
        keep=0,
        jpeg_scaling=bool(hparams.get("jpeg_scaling", False)),
    )
    metrics = split_metrics(probs, test.labels, thresholds)
    log.info(
        f"  test:      {_summary(metrics)} of {note} ({time.time() - t0:.1f}s; at_thresholds = what the service "
        "decides)"
    )
    return metrics


def _tested_checkpoint_metrics(resolved: Resolved) -> dict[str, Any]:
    """The run's own test metrics (run.json), only if the exported checkpoint is the one the run tested."""
    record = resolved.run_record
    tested = record.get("tested_checkpoint", record.get("best_checkpoint"))
    if not tested or resolved.run_dir is None or not record.get("test"):
        return {}
    candidates = {Path(tested).expanduser(), resolved.run_dir / CHECKPOINT_DIR / Path(tested).name}
    exported = resolved.checkpoint.resolve()
    if any(path.is_file() and path.resolve() == exported for path in candidates):
        return dict(record["test"])
    return {}


def _metadata(
    hparams: dict[str, Any], module, resolved: Resolved, calibration: Calibration, test_metrics: dict[str, Any]
) -> dict[str, Any]:
    """Everything the service and a reader of the model need: contract, thresholds, metrics, provenance."""
    attributes = list(hparams["attributes"])
    image_size = list(hparams["image_size"])
    record = resolved.run_record
    run_test = _tested_checkpoint_metrics(resolved)
    return {
        "faceattr_version": faceattr.__version__,
        "attributes": attributes,
        "num_attributes": len(attributes),
        "image_size": image_size,
        "crop": None if hparams.get("crop") is None else list(hparams["crop"]),
        # data.jpeg_scaling of training: the service decodes JPEGs the same way (faceattr/jpeg_scaling.py).
        "jpeg_scaling": bool(hparams.get("jpeg_scaling", False)),
        "aligned_size": list(ALIGNED_SIZE),
        "input": {
            "name": build.INPUT_NAME,
            "dtype": "float32",
            "shape": ["N", 3, *image_size],
            "layout": "NCHW RGB",
            "range": [0.0, 1.0],
        },
        "output": {
            "name": build.OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["N", len(attributes)],
            "meaning": "sigmoid probabilities, one per attribute",
        },
        "mean": list(hparams["mean"]),
        "std": list(hparams["std"]),
        "thresholds": {name: round(float(t), 6) for name, t in zip(attributes, calibration.thresholds)},
        "threshold_method": calibration.method,
        "uncalibrated_attributes": [a for a, ok in zip(attributes, calibration.calibrated.tolist()) if not ok],
        "backbone": hparams["backbone"],
        "num_parameters": sum(p.numel() for p in module.net.parameters()),
        "metrics": {
            # Validation: at_thresholds_tuned_here is optimistic (the thresholds were tuned on these images).
            "validation": calibration.metrics,
            # The run's whole test split through the service's preprocessing; at_thresholds = the served decisions.
            "test": test_metrics,
            "run": {k: record.get(k) for k in ("monitor", "best_score", "val_auroc_best", "epochs") if k in record},
            # The run's own test/* figures: only when this checkpoint is the one the run tested.
            "run_test": run_test,
        },
        "source": {
            "checkpoint": str(resolved.checkpoint.resolve()),
            "run_dir": None if resolved.run_dir is None else str(resolved.run_dir.resolve()),
            "picked": resolved.reason,
            "run_test_is_this_checkpoint": bool(run_test),
        },
        "hparams": {k: v for k, v in hparams.items() if k not in ("attributes",)},
    }


def _face_template(cfg: DictConfig, resolved: Resolved) -> dict[str, Any]:
    """The five-landmark template the service aligns detected faces onto (``face_template`` in the metadata): the
    mean of the training data's ``list_landmarks_align_celeba`` file when its data root has one, else the built-in
    CelebA mean."""
    root = cfg.get("data_root") or (resolved.run_config.get("data") or {}).get("root")
    path = find_landmark_file(str(root)) if root else None
    template = CELEBA_TEMPLATE
    if path is not None:
        try:
            template = estimate_template(path)
        except UserError as exc:
            log.warning(f"warning:     {exc}; faces are aligned onto the {CELEBA_TEMPLATE.source} instead")
    log.info(f"faces:       landmark template: {template.source}")
    return template.as_dict()


def _write_artefacts(
    cfg: DictConfig, module, calibration: Calibration, metadata: dict[str, Any], out_dir: Path
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Step 4: each format, written atomically and parity-checked; UserError (nothing stored) above the tolerance."""
    formats = _formats(cfg)
    image_size = metadata["image_size"]
    inputs = calibration.inputs
    example = inputs[:2].float().div(255) if len(inputs) >= 2 else torch.rand(2, 3, *image_size)
    exported = build.probability_model(module)
    files: dict[str, Path] = {}
    parity: dict[str, Any] = {}
    atol = float(cfg.parity.atol)
    for fmt in formats:
        path = out_dir / ARTEFACT_FILES[fmt]
        t0 = time.time()
        embedded = dict(metadata, format=fmt)
        if fmt == "torchscript":
            build.export_torchscript(exported, example, path, embedded)
        else:
            build.export_onnx(exported, example, path, embedded, cfg.export.get("opset"))
        seconds = time.time() - t0
        diff = _parity(_runner(fmt, path), inputs, calibration.reference)
        source = calibration.parity_source
        parity[fmt] = {"max_abs_diff": diff, "atol": atol, "images": source, "export_s": round(seconds, 2)}
        log.info(
            f"{fmt + ':':<12} {path} ({path.stat().st_size / 1e6:.2f} MB, {seconds:.1f}s); parity vs Lightning "
            f"on {source}: max |diff| = {diff:.2e} (atol {atol:.0e})"
        )
        if not diff <= atol:  # also catches NaN
            raise UserError(
                f"parity check failed for {fmt}: max |probability difference| vs the Lightning model = {diff:.3e} > "
                f"parity.atol={atol:g} on {source}; {path} is NOT saved to the model store"
            )
        files[ARTEFACT_FILES[fmt]] = path
    return files, parity


def _store(
    cfg: DictConfig,
    hparams: dict[str, Any],
    files: dict[str, Path],
    metadata: dict[str, Any],
    run_config: dict[str, Any],
    out_dir: Path,
) -> str | None:
    """Step 5: ``config.yaml`` and ``faceattr.json`` beside the artefacts, then a new model version in the store."""
    metadata_path, config_path = out_dir / METADATA_FILE, out_dir / EXPORT_CONFIG
    export_cfg = OmegaConf.to_container(cfg, resolve=True)
    write_text(config_path, yaml.safe_dump({"train": run_config, "export": export_cfg}, sort_keys=False))
    if not cfg.get("store", True):
        return None
    store_meta = dict(
        metadata, config=yaml.safe_dump(run_config, sort_keys=False) if run_config else "", export_config=export_cfg
    )
    labels = {
        "backbone": str(hparams["backbone"]),
        "image_size": "x".join(map(str, hparams["image_size"])),
        "formats": "+".join(metadata["formats"]),
        "project": "faceattr",
    }
    write_json(metadata_path, metadata)
    tag, store_path = save_model(
        str(cfg.name), {**files, METADATA_FILE: metadata_path, EXPORT_CONFIG: config_path}, labels, store_meta
    )
    log.info(f"bentoml:     saved {tag} ({store_path})")
    return tag


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export one checkpoint (the steps of the module doc); returns the summary written to ``faceattr.json``."""
    started = time.time()
    check_options(cfg)  # unknown keys and bad values: one line, before anything slow
    formats = _formats(cfg)
    if cfg.get("store", True):
        check_model_name(cfg.name)  # fail before the slow part
    resolved = resolve_checkpoint(cfg.ckpt)  # step 1
    log.info(f"checkpoint:  {resolved.checkpoint}")
    log.info(f"  picked:    {resolved.reason}")
    module = build.load_module(resolved.checkpoint)
    hparams = dict(module.hparams)
    if resolved.run_config:
        check_run_config(hparams, resolved.run_config, f"{resolved.run_dir}/config.yaml")
    _describe(hparams)

    calibration = _calibrate(cfg, module, hparams, resolved)
    test_metrics = _test_metrics(cfg, module, hparams, resolved, calibration.thresholds)
    metadata = _metadata(hparams, module, resolved, calibration, test_metrics)
    metadata["face_template"] = _face_template(cfg, resolved)

    out_dir = _output_dir(cfg, resolved.checkpoint, resolved.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # left by an export that was killed mid-write
    files, metadata["parity"] = _write_artefacts(cfg, module, calibration, metadata, out_dir)
    metadata["formats"] = {fmt: ARTEFACT_FILES[fmt] for fmt in formats}
    tag = _store(cfg, hparams, files, metadata, resolved.run_config, out_dir)
    if tag:
        metadata["tag"] = tag
    metadata["export_s"] = round(time.time() - started, 2)
    metadata["host"] = {"python": platform.python_version(), "torch": torch.__version__}
    metadata["output_dir"] = str(out_dir)
    write_json(out_dir / METADATA_FILE, metadata)
    return metadata


def summary_lines(cfg: DictConfig, metadata: dict[str, Any]) -> list[str]:
    """What export.py prints when it is done: the files, the time, and how to serve the stored model."""
    files = sorted(metadata["formats"].values())
    lines = [
        f"files:       {metadata['output_dir']} ({', '.join(files)}, {METADATA_FILE}, {EXPORT_CONFIG})",
        f"done in {metadata['export_s']:.1f}s",
    ]
    tag = metadata.get("tag")
    if tag:
        hint = "" if str(cfg.name) == "faceattr" else f"FACEATTR_SERVE_MODEL={tag} "
        onnx = "FACEATTR_SERVE_FORMAT=onnx " if list(metadata["formats"]) == ["onnx"] else ""
        lines.append(f"serve it:    {hint}{onnx}bentoml serve   (from the repo root; see docs/serving.md)")
    return lines
