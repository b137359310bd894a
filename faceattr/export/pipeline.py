"""The export entry: checkpoint -> artefacts (TorchScript, ONNX) -> parity check -> BentoML model store.

``export(cfg)`` is what ``python export.py`` runs (see ``conf/export.yaml``):

1. resolve ``ckpt`` (file, run dir or sweep dir) and rebuild the model from the checkpoint alone;
2. preprocess the run's validation images the way the service will, run the Lightning model on them, calibrate
   per-attribute thresholds and compute validation metrics (optimistic at the calibrated thresholds: tuned there);
3. measure the service's decision rule (those thresholds) on the run's whole test split (``test_metrics``);
   the model's contract (``faceattr/contract.py``, from the checkpoint's hyper-parameters) takes the thresholds and
   the face template;
4. write each format to ``<run dir>/export/`` and check it against the Lightning model on validation images
   (fails above ``parity.atol``);
5. save a new version of the BentoML model ``name`` with the artefacts, ``faceattr.json`` (the contract, then the
   export's figures and provenance) and ``config.yaml``.
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
from faceattr.artefacts import load_torchscript, onnx_session
from faceattr.atomic import remove_stale_temporaries, writable_directory, write_json, write_text
from faceattr.contract import CONTRACT_KEY, ModelContract
from faceattr.errors import UserError
from faceattr.export import build
from faceattr.export.calibrate import predict, split_metrics, split_set
from faceattr.export.options import check_options
from faceattr.export.store import check_model_name, save_model
from faceattr.faces import CELEBA_TEMPLATE, estimate_template, find_landmark_file
from faceattr.layout import ARTEFACT_FILES, CHECKPOINT_DIR, EXPORT_CONFIG, EXPORT_DIR, METADATA_FILE
from faceattr.model.loading import load_module
from faceattr.model.metrics import f1_thresholds
from faceattr.preprocess import ALIGNED_SIZE
from faceattr.run_finder import Resolved, check_run_config, resolve_checkpoint

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


def _runner(fmt: str, path: Path, contract: ModelContract):
    if fmt == "torchscript":
        module, _ = load_torchscript(path)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x).float()

        return run
    session = onnx_session(path)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([contract.output_name], {contract.input_name: x.numpy()})[0])

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


def _describe(contract: ModelContract) -> None:
    (h, w), crop = contract.image_size, contract.crop
    log.info(
        f"model:       {contract.backbone}, {len(contract.attributes)} attributes, input {h}x{w}, crop "
        f"{None if crop is None else list(crop)} of the aligned {ALIGNED_SIZE[1]}x{ALIGNED_SIZE[0]} frame"
    )


def _calibrate(cfg: DictConfig, module, contract: ModelContract, resolved: Resolved) -> Calibration:
    """Step 2: the Lightning model on the validation images -> parity references, thresholds, validation metrics."""
    image_size, crop, attributes = contract.image_size, contract.crop, contract.attributes
    hparams = dict(module.hparams)
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
        jpeg_scaling=contract.jpeg_scaling,
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
    cfg: DictConfig, module, contract: ModelContract, resolved: Resolved, thresholds: torch.Tensor
) -> dict[str, Any]:
    """Step 3: the service's decision rule on the run's whole test split (empty when off or there is no data)."""
    if not cfg.get("test_metrics", True):
        return {}
    test, note = split_set(dict(module.hparams), resolved.run_config, cfg.get("data_root"), "test")
    if test is None:
        log.info(f"test:        skipped: {note}")
        return {}
    t0 = time.time()
    _, probs = predict(
        module,
        test.paths,
        contract.image_size,
        contract.crop,
        int(cfg.calibration.batch_size),
        int(cfg.calibration.num_workers),
        keep=0,
        jpeg_scaling=contract.jpeg_scaling,
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
        # The training hyper-parameters the contract does not hold (provenance only).
        "hparams": {k: v for k, v in dict(module.hparams).items() if k not in contract_fields},
    }


def _face_template(cfg: DictConfig, resolved: Resolved, contract: ModelContract) -> ModelContract:
    """``contract`` with the five-landmark template the service aligns detected faces onto: the mean of the training
    data's ``list_landmarks_align_celeba`` file when its data root has one, else the built-in CelebA mean."""
    root = cfg.get("data_root") or (resolved.run_config.get("data") or {}).get("root")
    path = find_landmark_file(str(root)) if root else None
    template = CELEBA_TEMPLATE
    if path is not None:
        try:
            template = estimate_template(path)
        except UserError as exc:
            log.warning(f"warning:     {exc}; faces are aligned onto the {CELEBA_TEMPLATE.source} instead")
    log.info(f"faces:       landmark template: {template.source}")
    return contract.with_face_template(template.points, template.source)


def _write_artefacts(
    cfg: DictConfig, module, contract: ModelContract, calibration: Calibration, metadata: dict, out_dir: Path
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Step 4: each format, written atomically and parity-checked; UserError (nothing stored) above the tolerance."""
    formats = _formats(cfg)
    inputs = calibration.inputs
    example = inputs[:2].float().div(255) if len(inputs) >= 2 else torch.rand(2, 3, *contract.image_size)
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
        diff = _parity(_runner(fmt, path, contract), inputs, calibration.reference)
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
    contract: ModelContract,
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
        "backbone": contract.backbone,
        "image_size": "x".join(map(str, contract.image_size)),
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
    module = load_module(resolved.checkpoint)
    if resolved.run_config:
        check_run_config(dict(module.hparams), resolved.run_config, f"{resolved.run_dir}/config.yaml")
    contract = module.contract
    _describe(contract)
    out_dir = writable_directory(_output_dir(cfg, resolved.checkpoint, resolved.run_dir), hint="output_dir=...")
    remove_stale_temporaries(out_dir)  # left by an export that was killed mid-write

    calibration = _calibrate(cfg, module, contract, resolved)
    test_metrics = _test_metrics(cfg, module, contract, resolved, calibration.thresholds)
    contract = contract.with_thresholds(
        calibration.thresholds.tolist(), calibration.calibrated.tolist(), calibration.method
    )
    contract = _face_template(cfg, resolved, contract)
    metadata = _metadata(contract, module, resolved, calibration, test_metrics)

    files, metadata["parity"] = _write_artefacts(cfg, module, contract, calibration, metadata, out_dir)
    metadata["formats"] = {fmt: ARTEFACT_FILES[fmt] for fmt in formats}
    tag = _store(cfg, contract, files, metadata, resolved.run_config, out_dir)
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
