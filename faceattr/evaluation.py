"""The evaluation entry: one checkpoint on one split, with the figures papers report.

``evaluate(cfg)`` is what ``python eval.py`` runs (see ``conf/eval.yaml``):

1. resolve ``ckpt`` (a ``.ckpt``, a run dir: its best checkpoint, a sweep dir: its best job's) and rebuild the model
   from the checkpoint alone;
2. build the run's own data module (faceattr/data/run_data.py: its ``config.yaml``; ``data.*`` keys of eval's config
   override it), so images are read, cropped and resized exactly as training evaluated them;
3. pick the decision thresholds: a fixed one (0.5, as training's metrics use), or ``calibrated``: F1-optimal per
   attribute on the validation split (as export calibrates them for the service);
4. run Lightning's test (or validate) loop with the model's own metrics; for the checkpoint a training run tested,
   the test figures equal that run's ``test/*``. The same loop keeps every image's probabilities
   (faceattr/eval_groups.py), from which come the calibration (ECE, Brier score, reliability diagram) and the
   results by subgroup (``groups``, faceattr/fairness.py);
5. write ``<run dir>/eval/<split>.json`` (macro figures, number of images, the subgroup summary: worst groups and
   gaps), ``<split>_per_attribute.csv`` (positive rate, accuracy, balanced accuracy, AUROC, F1, threshold, ECE,
   Brier score), ``<split>_groups.csv`` and ``<split>_reliability.png``, log ``eval/<split>/*`` to the run's
   TensorBoard, and return the summary.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from faceattr.atomic import writable_directory, write_json, write_text
from faceattr.config.check import check_config
from faceattr.data.run_data import run_datamodule
from faceattr.errors import UserError
from faceattr.eval_groups import (
    PredictionCollector,
    calibration,
    group_files,
    resolve_groups,
    subgroup_report,
    write_reliability,
)
from faceattr.layout import EVAL_DIR, TENSORBOARD_DIR, eval_files
from faceattr.model.loading import load_module
from faceattr.model.metrics import PER_ATTRIBUTE, f1_thresholds
from faceattr.run_finder import Resolved, check_run_config, resolve_checkpoint

log = logging.getLogger(__name__)

MACRO_KEYS = ("acc", "bacc", "auroc", "f1", "ece", "brier", "loss")


def _thresholds_setting(value: Any) -> float | str:
    """``thresholds`` (already checked by the eval schema) as a number or the word ``calibrated``."""
    return "calibrated" if str(value).strip().lower() == "calibrated" else float(value)


def _output_dir(cfg: DictConfig, resolved: Resolved) -> Path:
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir)).expanduser()
    return (resolved.run_dir if resolved.run_dir is not None else resolved.checkpoint.parent) / EVAL_DIR


def _calibrated_thresholds(module, datamodule) -> tuple[torch.Tensor, int]:
    """F1-optimal thresholds per attribute on the validation split (the model in eval mode, no gradients)."""
    probs, labels = [], []
    module.eval()
    with torch.inference_mode():
        for images, batch_labels, _ in datamodule.val_dataloader():
            if images is None:
                continue
            probs.append(torch.sigmoid(module(images.float().div(255)).float()))
            labels.append(batch_labels)
    if not probs:
        raise UserError("thresholds=calibrated needs validation images, but the validation split gave none")
    probs, labels = torch.cat(probs), torch.cat(labels)
    thresholds, _ = f1_thresholds(probs, labels)
    return thresholds, len(labels)


def _trainer(resolved: Resolved, callbacks: list) -> L.Trainer:
    # Lightning's start-up notices ("GPU available: ...") would come before the table on stdout.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    precision = ((resolved.run_config or {}).get("trainer") or {}).get("precision") or "32-true"
    return L.Trainer(
        accelerator="auto",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=sys.stdout.isatty(),  # Lightning draws its bars on stdout
        callbacks=callbacks,
    )


def _per_attribute_csv(table: dict[str, dict[str, float | None]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["attribute", *PER_ATTRIBUTE])
    for name, row in table.items():
        writer.writerow([name, *("" if row[c] is None else f"{row[c]:.6f}" for c in PER_ATTRIBUTE)])
    return buffer.getvalue()


def format_table(table: dict[str, dict[str, float | None]], summary: dict[str, Any]) -> str:
    """The per-attribute table sorted by accuracy (best first), then the macro line."""
    widths = {column: max(len(column), 6) + 2 for column in PER_ATTRIBUTE}

    def cell(column: str, value: float | None) -> str:
        return f"{'n/a':>{widths[column]}}" if value is None else f"{value:{widths[column]}.4f}"

    width = max([len("attribute"), *map(len, table)])
    lines = [f"{'attribute':<{width}}" + "".join(f"{column:>{widths[column]}}" for column in PER_ATTRIBUTE)]
    for name, row in sorted(table.items(), key=lambda item: -(item[1]["acc"] or 0.0)):
        lines.append(f"{name:<{width}}" + "".join(cell(column, row[column]) for column in PER_ATTRIBUTE))
    lines.append(
        f"{'mean':<{width}}"
        + "".join(
            cell(column, summary.get(column)) if column in summary else " " * widths[column] for column in PER_ATTRIBUTE
        )
    )
    return "\n".join(lines)


def _tensorboard_dir(run_dir: Path | None) -> Path | None:
    """The folder holding the run's TensorBoard events (a sweep job's is one level down), if the run has one."""
    if run_dir is None or not (run_dir / TENSORBOARD_DIR).is_dir():
        return None
    events = sorted((run_dir / TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    return events[0].parent if events else run_dir / TENSORBOARD_DIR


def _log_to_tensorboard(folder: Path, split: str, summary: dict[str, Any], table: dict, step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key in MACRO_KEYS:
            if summary.get(key) is not None:
                writer.add_scalar(f"eval/{split}/{key}", summary[key], step)
        for name, row in table.items():
            if row["acc"] is not None:
                writer.add_scalar(f"eval/{split}/acc/{name}", row["acc"], step)
    finally:
        writer.close()


def _calibration_columns(table: dict, summary: dict, probs: torch.Tensor, labels: torch.Tensor) -> None:
    """Per-attribute ECE and Brier score (and their means) from the loop's probabilities, for either split."""
    figures = calibration(probs, labels)
    for key, values in figures.items():
        for name, value in zip(table, values.tolist()):
            table[name][key] = round(value, 6) if value == value else None
        defined = values[~torch.isnan(values)]
        summary[key] = float(defined.mean()) if len(defined) else None


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate one checkpoint on one split (the steps of the module doc); returns what ``<split>.json`` holds."""
    check_config(cfg, "eval")  # split, thresholds, data.*, groups: one line for a bad value (conf/eval.yaml's schema)
    split = str(cfg.split)
    thresholds = _thresholds_setting(cfg.thresholds)
    resolved = resolve_checkpoint(cfg.ckpt)
    out_dir = writable_directory(_output_dir(cfg, resolved), hint="output_dir=...")  # before the slow steps
    module = load_module(resolved.checkpoint)
    if resolved.run_config:
        check_run_config(dict(module.hparams), resolved.run_config, f"{resolved.run_dir}/config.yaml")

    overrides = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = run_datamodule(resolved.run_config, module.contract, overrides, run_dir=resolved.run_dir)
    datamodule.prepare_data()
    datamodule.setup("test")
    groups = resolve_groups(OmegaConf.to_container(cfg.groups) if cfg.groups is not None else None, datamodule)
    if thresholds == "calibrated":
        values, count = _calibrated_thresholds(module, datamodule)
        method = f"calibrated (F1-optimal on {count} validation images)"
    else:
        values, method = torch.full((len(module.contract.attributes),), float(thresholds)), f"{thresholds:g}"
    stage = "test" if split == "test" else "val"
    module.metrics[stage].set_thresholds(values)

    collector = PredictionCollector()
    trainer = _trainer(resolved, [collector])
    run = trainer.test if split == "test" else trainer.validate
    logged = run(module, datamodule=datamodule, verbose=False)[0]
    result = module.results[stage]
    summary: dict[str, Any] = {
        "split": split,
        "num_images": result["macro"]["num_images"],
        **{key: result["macro"].get(key) for key in MACRO_KEYS if key != "loss"},
        "loss": float(logged[f"{stage}/loss"]) if f"{stage}/loss" in logged else None,
        "thresholds": method,
        "checkpoint": str(resolved.checkpoint),
        "picked": resolved.reason,
        "data_root": str(datamodule.root),
    }
    table = result["per_attribute"]
    attributes = list(module.contract.attributes)
    probs, labels = collector.result(len(attributes))
    _calibration_columns(table, summary, probs, labels)

    macro_file, table_file = (out_dir / name for name in eval_files(split))
    groups_file, figure_file = (out_dir / name for name in group_files(split))
    files = [macro_file, table_file]
    report = None
    if groups:
        report = subgroup_report(datamodule, split, groups, probs, labels, attributes, values, groups_file)
        files += [groups_file] if report is not None else []
    summary["groups"] = None if report is None else report.to_json()
    write_json(macro_file, summary)
    write_text(table_file, _per_attribute_csv(table))
    files.append(write_reliability(figure_file, probs, labels, attributes))
    folder = _tensorboard_dir(resolved.run_dir) if cfg.get("tensorboard", True) else None
    if folder is not None:
        step = int(
            torch.load(resolved.checkpoint, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0)
        )
        _log_to_tensorboard(folder, split, summary, table, step)
    summary["files"] = [str(path) for path in files]
    summary["tensorboard"] = None if folder is None else str(folder)
    summary["table"] = format_table(table, summary)
    summary["worst_groups"] = None if report is None else report.format_worst(10)
    return summary
