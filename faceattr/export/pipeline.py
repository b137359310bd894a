"""The export entry: checkpoint -> artefacts (TorchScript, ONNX) -> parity check -> BentoML model store.

``export(cfg)`` is what ``python export.py`` runs (see ``conf/export.yaml``):

1. resolve ``ckpt`` (file, run dir or sweep dir) and rebuild the model from the checkpoint alone;
2. preprocess the run's validation images the way the service will and run the Lightning model on them; with
   ``export.calibration=temperature`` fit one temperature per attribute on their logits; calibrate per-attribute
   thresholds on the (scaled) probabilities and compute validation metrics (optimistic at the calibrated
   thresholds: tuned there); the model's contract (``faceattr/contract.py``, from the checkpoint's
   hyper-parameters) takes the temperatures, the thresholds and the face template;
3. measure the served model (those temperatures and thresholds) on the run's whole test split (``test_metrics``):
   decision metrics, positive rates, calibration before and after scaling, the groups (``faceattr/export/figures.py``);
4. write each format to ``<run dir>/export/`` and check it against the Lightning model's scaled probabilities on
   validation images (fails above ``parity.atol``; ``faceattr/export/build.py``);
5. with ``export.quantize=int8``, quantize the ONNX artefact (calibrated on validation inputs), judge it on the test
   inputs against the fp32 one and refuse it above ``quantize.max_auroc_drop`` (``faceattr/export/quantize.py``);
6. write ``MODEL_CARD.md`` from those figures (``faceattr/export/model_card.py``) and save a new version of the
   BentoML model ``name`` with the artefacts, ``faceattr.json`` (the contract, then the export's figures and
   provenance), ``config.yaml`` and the card (``faceattr/export/store.py``).
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

import faceattr
from faceattr.atomic import remove_stale_temporaries, writable_directory, write_json
from faceattr.contract import CONTRACT_KEY, ModelContract
from faceattr.errors import UserError
from faceattr.export import build, quantize
from faceattr.export.calibrate import ImageSet, predict, split_metrics, split_set
from faceattr.export.figures import ECE_BINS, SplitFigures, split_figures
from faceattr.export.model_card import render_card, training_data
from faceattr.export.options import check_options
from faceattr.export.store import check_model_name, store_export
from faceattr.faces import CELEBA_TEMPLATE, estimate_template, find_landmark_file
from faceattr.layout import (
    ARTEFACT_FILES,
    CHECKPOINT_DIR,
    EXPORT_CONFIG,
    EXPORT_DIR,
    EXPORT_FORMATS,
    INT8_ARTEFACT,
    METADATA_FILE,
    MODEL_CARD_FILE,
)
from faceattr.model.loading import load_module
from faceattr.model.metrics import f1_thresholds
from faceattr.preprocess import ALIGNED_SIZE
from faceattr.run_finder import Resolved, check_run_config, resolve_checkpoint

log = logging.getLogger(__name__)

#: The group attributes of ``groups: null``, where the data has them (CelebA's; Mitchell et al.'s smile detector).
DEFAULT_GROUPS = ("Male", "Young")


def _formats(cfg: DictConfig) -> list[str]:
    formats = list(cfg.export.get("formats") or [])
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if not formats or unknown:
        raise UserError(f"export.formats={formats}: expected a non-empty list of {', '.join(EXPORT_FORMATS)}")
    return list(dict.fromkeys(formats))


def _output_dir(cfg: DictConfig, checkpoint: Path, run_dir: Path | None) -> Path:
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir)).expanduser()
    return (run_dir if run_dir is not None else checkpoint.parent) / EXPORT_DIR


@dataclass
class Calibration:
    """What the validation split gave: parity inputs and their reference outputs, temperatures, thresholds, metrics."""

    inputs: torch.Tensor  # uint8 (N, 3, h, w): parity-check images
    reference: torch.Tensor  # the Lightning model's (temperature-scaled) probabilities on ``inputs``
    parity_source: str
    temperatures: tuple[float, ...]  # one per attribute, as the contract rounds them (all 1: not scaled)
    thresholds: torch.Tensor
    calibrated: torch.Tensor  # bool per attribute
    method: str
    metrics: dict[str, Any]
    quantize_inputs: torch.Tensor | None = None  # uint8 validation inputs int8 is calibrated on (quantize=int8)


def _describe(contract: ModelContract) -> None:
    (h, w), crop = contract.image_size, contract.crop
    log.info(
        f"model:       {contract.backbone}, {len(contract.attributes)} attributes, input {h}x{w}, crop "
        f"{None if crop is None else list(crop)} of the aligned {ALIGNED_SIZE[1]}x{ALIGNED_SIZE[0]} frame"
    )


def _temperatures(cfg: DictConfig, contract: ModelContract, logits: torch.Tensor, labels: torch.Tensor, note: str):
    """``export.calibration``: all 1 (none), or one temperature per attribute fitted on the validation logits."""
    if cfg.export.get("calibration", "none") != "temperature":
        return contract.temperatures
    if len(labels) == 0:
        raise UserError(f"export.calibration=temperature fits on validation images, and there are none: {note}")
    from faceattr.reliability import fit_temperatures

    temperatures = contract.with_temperatures(fit_temperatures(logits, labels).tolist()).temperatures
    ordered = sorted(temperatures)
    log.info(
        f"temperature: fitted per attribute on {len(labels)} validation images (NLL): T from {ordered[0]:.3f} to "
        f"{ordered[-1]:.3f}, median {ordered[len(ordered) // 2]:.3f}"
    )
    return temperatures


def _calibrate(cfg: DictConfig, module, contract: ModelContract, resolved: Resolved) -> Calibration:
    """Step 2: the Lightning model on the validation images -> temperatures, parity references, thresholds (on the
    scaled probabilities), validation metrics."""
    image_size, attributes = contract.image_size, contract.attributes
    hparams = dict(module.hparams)
    calib_cfg, num_parity = cfg.calibration, int(cfg.parity.num_images)
    default = float(calib_cfg.default_threshold)
    validation, note = split_set(hparams, resolved.run_config, cfg.get("data_root"), "valid", resolved.run_dir)
    if validation is None:
        if quantize.requested(cfg):
            raise UserError(f"export.quantize=int8 calibrates on validation images, and there are none: {note}")
        _temperatures(cfg, contract, torch.empty(0, len(attributes)), torch.empty(0, len(attributes)), note)
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
            contract.temperatures,
            torch.full((len(attributes),), default),
            torch.zeros(len(attributes), dtype=torch.bool),
            "default (no validation data)",
            {},
        )

    _groups(cfg, validation.datamodule)  # a group the data lacks fails here, before anything slow
    limit = calib_cfg.get("max_images")
    keep = max(num_parity, int(cfg.quantize.num_images)) if quantize.requested(cfg) else num_parity
    count = len(validation.paths) if limit is None else min(len(validation.paths), max(int(limit), keep))
    t0 = time.time()
    kept, logits = _predict(cfg, module, contract, validation, count, keep=keep)
    inputs = kept[:num_parity]
    labels = validation.labels[:count]
    log.info(f"validation:  {count} images of {note} ({time.time() - t0:.1f}s through the Lightning model)")
    temperatures = _temperatures(cfg, contract, logits, labels, note)
    probs = build.scaled_probabilities(logits, temperatures)
    if limit != 0 and len(labels) > 0:
        thresholds, calibrated = f1_thresholds(probs, labels, default)
        method = f"F1-optimal per attribute on {len(labels)} validation images"
        method += " (temperature-scaled probabilities)" if any(t != 1.0 for t in temperatures) else ""
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
        inputs,
        probs[: len(inputs)],
        f"{len(inputs)} validation images",
        temperatures,
        thresholds,
        calibrated,
        method,
        metrics,
        kept[: int(cfg.quantize.num_images)] if quantize.requested(cfg) else None,
    )


def _predict(cfg: DictConfig, module, contract: ModelContract, images: ImageSet, count: int | None, keep: int):
    """The first ``keep`` preprocessed inputs and the Lightning model's logits on the first ``count`` of ``images``
    (all: None), read as training read them (faces detected and aligned for a data.align=detect model)."""
    batch_size, workers = int(cfg.calibration.batch_size), int(cfg.calibration.num_workers)
    paths = images.paths if count is None else images.paths[:count]
    data, size, crop, scaling = images.datamodule, contract.image_size, contract.crop, contract.jpeg_scaling
    align, detector = getattr(data, "align", "none"), getattr(data, "detector", None)
    return predict(module, paths, size, crop, batch_size, workers, keep, scaling, align=align, detector=detector)


def _summary(metrics: dict[str, Any]) -> str:
    parts = [f"auroc={metrics['auroc']:.4f}"] if "auroc" in metrics else []
    for key in ("at_0.5", "at_thresholds", "at_thresholds_tuned_here"):
        if isinstance(metrics.get(key), dict):
            parts.append(f"{key}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics[key].items()))
    return ", ".join(parts) + f" ({metrics.get('num_images', 0)} images)"


def _groups(cfg: DictConfig, datamodule) -> list[str]:
    """``groups``: the ones given (one line naming the data's columns for a name it lacks), or (null) Male and Young
    where the data has those columns."""
    columns = tuple(datamodule.column_names)
    chosen = cfg.get("groups")
    if chosen is None:
        return [name for name in DEFAULT_GROUPS if name in columns]
    unknown = [str(name) for name in chosen if str(name) not in columns]
    if unknown:
        raise UserError(f"groups: the data has no column {', '.join(unknown)}; its columns: {', '.join(columns)}")
    return list(dict.fromkeys(str(name) for name in chosen))


def _test_metrics(cfg: DictConfig, module, contract: ModelContract, resolved: Resolved):
    """Step 3: the served model (temperatures and thresholds of ``contract``) on the run's whole test split: the
    figures of :mod:`faceattr.export.figures` (empty when off or there is no data), and with ``export.quantize=int8``
    the test split's uint8 inputs and labels (int8 is judged on them; else empty)."""
    nothing = torch.empty(0, 3, *contract.image_size, dtype=torch.uint8), torch.empty(0, len(contract.attributes))
    if not cfg.get("test_metrics", True):
        return SplitFigures(), *nothing
    test, note = split_set(dict(module.hparams), resolved.run_config, cfg.get("data_root"), "test", resolved.run_dir)
    if test is None:
        log.info(f"test:        skipped: {note}")
        return SplitFigures(), *nothing
    groups = _groups(cfg, test.datamodule)
    group_labels = test.datamodule.group_labels("test", groups) if groups else None
    t0 = time.time()
    keep = len(test.paths) if quantize.requested(cfg) else 0
    inputs, logits = _predict(cfg, module, contract, test, None, keep=keep)
    method = str(cfg.export.get("calibration", "none"))
    figures = split_figures(logits, test.labels, contract, method, group_labels, groups)
    metrics = figures.metrics
    log.info(
        f"  test:      {_summary(metrics)} of {note} ({time.time() - t0:.1f}s; at_thresholds = what the service "
        "decides)"
    )
    calibration = metrics.get("calibration") or {}
    if calibration:
        before, after = calibration["ece_before"]["macro"], calibration["ece_after"]["macro"]
        log.info(f"  test ECE:  {before} before temperature scaling, {after} served (macro, {ECE_BINS} bins)")
    worst = (metrics.get("groups") or {}).get("worst") or {}
    if worst:
        name, entry = min(worst.items(), key=lambda item: item[1]["worst_group_acc"])
        log.info(
            f"  groups:    {', '.join(groups)}; lowest worst-group accuracy {entry['worst_group_acc']:.4f} "
            f"({name}: {entry['worst_group']}; average {entry['avg_acc']:.4f})"
        )
    return figures, inputs, test.labels


def _tested_checkpoint_metrics(resolved: Resolved) -> dict[str, Any]:
    """The run's own test metrics (run.json), only if the exported checkpoint is the one the run tested."""
    record = resolved.run_record
    if record is None or not record.tested_checkpoint or resolved.run_dir is None or not record.test:
        return {}
    tested = record.tested_checkpoint
    candidates = {Path(tested).expanduser(), resolved.run_dir / CHECKPOINT_DIR / Path(tested).name}
    exported = resolved.checkpoint.resolve()
    if any(path.is_file() and path.resolve() == exported for path in candidates):
        return dict(record.test)
    return {}


def _metadata(contract: ModelContract, module, resolved: Resolved, calibration: Calibration, test_metrics) -> dict:
    """``faceattr.json``: the model's contract (what the service and every reader need), then the export's figures
    and provenance (for people and tools reading the model)."""
    record = resolved.run_record
    run_test = _tested_checkpoint_metrics(resolved)
    contract_fields = set(contract.to_json())
    return {
        CONTRACT_KEY: contract.to_json(),
        "faceattr_version": faceattr.__version__,
        "num_parameters": sum(p.numel() for p in module.net.parameters()),
        "metrics": {
            # Validation: at_thresholds_tuned_here is optimistic (the thresholds were tuned on these images).
            "validation": calibration.metrics,
            # The run's whole test split through the service's preprocessing; at_thresholds = the served decisions.
            "test": test_metrics,
            "run": {}
            if record is None
            else {"monitor": record.monitor, "best_score": record.best_score, "epochs": record.epochs},
            # The run's own test/* figures: only when this checkpoint is the one the run tested.
            "run_test": run_test,
        },
        "source": {
            "checkpoint": str(resolved.checkpoint.resolve()),
            "run_dir": None if resolved.run_dir is None else str(resolved.run_dir.resolve()),
            "picked": resolved.reason,
            "run_test_is_this_checkpoint": bool(run_test),
        },
        "training_data": training_data(resolved.run_config),
        # The training hyper-parameters the contract does not hold (provenance only).
        "hparams": {k: v for k, v in dict(module.hparams).items() if k not in contract_fields},
    }


def _face_template(cfg: DictConfig, resolved: Resolved, contract: ModelContract) -> ModelContract:
    """``contract`` with the five-landmark template the service aligns detected faces onto: the mean of the training
    data's ``list_landmarks_align_celeba`` file when its data root has one, else the built-in CelebA mean (always for a
    data.align=detect model: training aligned its photos onto that)."""
    root = cfg.get("data_root") or (resolved.run_config.get("data") or {}).get("root")
    path = find_landmark_file(str(root)) if root and contract.face_alignment != "detect" else None
    template = CELEBA_TEMPLATE
    if path is not None:
        try:
            template = estimate_template(path)
        except UserError as exc:
            log.warning(f"warning:     {exc}; faces are aligned onto the {CELEBA_TEMPLATE.source} instead")
    log.info(f"faces:       landmark template: {template.source}")
    return contract.with_face_template(template.points, template.source)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export one checkpoint (the steps of the module doc); returns the summary written to ``faceattr.json``."""
    started = time.time()
    check_options(cfg)  # unknown keys and bad values: one line, before anything slow
    formats = _formats(cfg)
    quantize.check_request(cfg, formats)
    if cfg.get("store", True):
        check_model_name(cfg.name)  # fail before the slow part
    if cfg.export.get("calibration") == "temperature" and cfg.calibration.get("max_images") == 0:
        raise UserError(
            "export.calibration=temperature fits on the validation images, which calibration.max_images=0 turns off: "
            "give calibration.max_images=null (all) or a number"
        )
    resolved = resolve_checkpoint(cfg.ckpt)  # step 1
    log.info(f"checkpoint:  {resolved.checkpoint}")
    log.info(f"  picked:    {resolved.reason}")
    module = load_module(resolved.checkpoint)
    if resolved.run_config:
        check_run_config(dict(module.hparams), resolved.run_config, f"{resolved.run_dir}/config.yaml")
    contract = module.contract
    _describe(contract)
    out_dir = writable_directory(_output_dir(cfg, resolved.checkpoint, resolved.run_dir), hint="output_dir=...")
    remove_stale_temporaries(out_dir)  # left by an export that was killed mid-write

    calibration = _calibrate(cfg, module, contract, resolved)
    contract = contract.with_temperatures(calibration.temperatures).with_thresholds(
        calibration.thresholds.tolist(), calibration.calibrated.tolist(), calibration.method
    )
    figures, *tests = _test_metrics(cfg, module, contract, resolved)
    contract = _face_template(cfg, resolved, contract)
    metadata = _metadata(contract, module, resolved, calibration, figures.metrics)

    atol, opset = float(cfg.parity.atol), cfg.export.get("opset")
    parity = build.ParityImages(calibration.inputs, calibration.reference, calibration.parity_source)
    files, metadata["parity"] = build.write_checked(module, contract, formats, parity, metadata, out_dir, atol, opset)
    metadata["formats"] = {fmt: ARTEFACT_FILES[fmt] for fmt in formats}
    if calibration.quantize_inputs is not None:  # step 5
        contract = quantize.add_int8(cfg, contract, files, metadata, out_dir, calibration.quantize_inputs, tests)
    exported_on = datetime.now(UTC).date().isoformat()

    def card(tag: str | None) -> str:
        return render_card(metadata, figures.group_rows, tag, exported_on)

    tag = store_export(cfg, contract, files, metadata, resolved.run_config, out_dir, card)
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
        f"files:       {metadata['output_dir']} ({', '.join([*files, METADATA_FILE, EXPORT_CONFIG, MODEL_CARD_FILE])})",
        f"done in {metadata['export_s']:.1f}s",
    ]
    tag = metadata.get("tag")
    if tag:
        hint = "" if str(cfg.name) == "faceattr" else f"FACEATTR_SERVE_MODEL={tag} "
        onnx = "FACEATTR_SERVE_FORMAT=onnx " if set(metadata["formats"]) <= {"onnx", INT8_ARTEFACT} else ""
        lines.append(f"serve it:    {hint}{onnx}bentoml serve   (from the repo root; see docs/serving.md)")
    return lines
