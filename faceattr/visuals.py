"""Pictures in TensorBoard: what the model sees and gets wrong, beside the numbers.

``TensorBoardPictures`` (conf/callbacks/default.yaml, ``pictures:``) writes, into the run's TensorBoard logger:

* ``val/faces`` (IMAGES tab), every ``every_n_epochs`` epochs: the first validation faces, each with its
  ``top_k`` most probable predicted attributes, green where the label agrees and red where it does not, the
  positives it missed in orange, and how many of all attributes it got wrong;
* ``val/pr_curve/<Attribute>`` (PR CURVES tab), at the end of fit: each attribute's precision-recall curve on the
  last validated epoch's whole validation split (the probabilities behind ``val/auroc``, no extra pass);
* ``test/per_attribute`` (IMAGES tab), after testing: a bar chart of each attribute's test accuracy and AUROC;
* ``test/reliability`` (IMAGES tab), after testing: the reliability diagram of the test split (all attributes and
  the worst-calibrated few, faceattr/reliability.py), beside the logged ``test/ece``.

Unknown labels (:data:`UNKNOWN_LABEL`) are left out of the PR curves and the diagram, and captioned as unknown.

Without a TensorBoard logger it does nothing; only rank zero draws and writes. matplotlib is imported when a
picture is drawn, not when this module is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.utilities.data import dim_zero_cat

from faceattr.attributes import UNKNOWN_LABEL

# Decisions are probability >= 0.5, the threshold of val/acc.
DECISION_THRESHOLD = 0.5
RIGHT, WRONG, MISSED, UNKNOWN = "#1a7f37", "#d1242f", "#d4640b", "#6e7781"


def tensorboard_writer(trainer: L.Trainer):
    """The SummaryWriter of the trainer's TensorBoard logger, or None without one."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def face_lines(
    probs: Sequence[float], labels: Sequence[float], attributes: Sequence[str], top_k: int
) -> list[tuple[str, str]]:
    """The caption of one face as (text, colour) lines: how many attributes are wrong, the ``top_k`` most probable
    predicted attributes (green: labelled so, red: not, grey: label unknown), then up to ``top_k`` missed positives
    (orange). Unknown labels count as neither right nor wrong."""
    probs, raw = np.asarray(probs, dtype=float), np.asarray(labels)
    known, labels = raw != UNKNOWN_LABEL, raw == 1
    predicted = probs >= DECISION_THRESHOLD
    wrong = int(((predicted != labels) & known).sum())
    count = int(known.sum())
    lines = [(f"{wrong} of {count} wrong" if wrong else f"all {count} right", WRONG if wrong else RIGHT)]
    order = np.argsort(-probs, kind="stable")
    colours = np.where(known, np.where(labels, RIGHT, WRONG), UNKNOWN)
    lines += [(f"{attributes[i]} {probs[i]:.2f}", str(colours[i])) for i in order if predicted[i]][:top_k]
    lines += [(f"missed {attributes[i]} {probs[i]:.2f}", MISSED) for i in order if labels[i] and not predicted[i]][
        :top_k
    ]
    return lines


def _render(figure) -> np.ndarray:
    """A matplotlib Figure as an RGB ``(H, W, 3)`` uint8 array (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def face_grid(
    images: np.ndarray, probs: np.ndarray, labels: np.ndarray, attributes: Sequence[str], top_k: int
) -> np.ndarray:
    """Faces ``(N, H, W, 3)`` uint8 in a grid, each captioned by :func:`face_lines`; an RGB ``(H, W, 3)`` array."""
    from matplotlib.figure import Figure

    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    face_in, line_in, pad_in = 1.4, 0.13, 0.08  # inches: face side, caption line height, margin
    lines = 1 + 2 * top_k
    cell_w, cell_h = face_in + 2 * pad_in, face_in + lines * line_in + 2 * pad_in
    width, height = cols * cell_w, rows * cell_h
    figure = Figure(figsize=(width, height), dpi=100, facecolor="white")
    for index in range(count):
        row, col = divmod(index, cols)
        left, top = col * cell_w + pad_in, height - row * cell_h - pad_in
        axes = figure.add_axes((left / width, (top - face_in) / height, face_in / width, face_in / height))
        axes.imshow(images[index])
        axes.set_axis_off()
        for number, (text, colour) in enumerate(face_lines(probs[index], labels[index], attributes, top_k)):
            y = top - face_in - (number + 0.9) * line_in
            figure.text(
                left / width,
                y / height,
                text,
                color=colour,
                fontsize=6.5,
                fontweight="bold" if number == 0 else "normal",
            )
    return _render(figure)


def attribute_bar_chart(per_attribute: dict[str, dict[str, Any]], title: str) -> np.ndarray:
    """Horizontal bars of each attribute's accuracy and AUROC (``{attribute: {acc, auroc, ...}}``, None = not
    defined), worst accuracy at the top; an RGB ``(H, W, 3)`` array."""
    from matplotlib.figure import Figure

    def value(row: dict, name: str) -> float:
        return float("nan") if row.get(name) is None else float(row[name])

    names = sorted(per_attribute, key=lambda name: -np.nan_to_num(value(per_attribute[name], "acc"), nan=-1.0))
    acc = np.array([value(per_attribute[name], "acc") for name in names])
    auroc = np.array([value(per_attribute[name], "auroc") for name in names])
    lowest = np.nanmin(np.concatenate([acc, auroc, [1.0]]))
    figure = Figure(figsize=(7, 1.2 + 0.24 * len(names)), dpi=100, facecolor="white")
    axes = figure.add_subplot()
    y = np.arange(len(names))
    axes.barh(y - 0.2, np.nan_to_num(acc), height=0.4, label="accuracy", color="#4c72b0")
    axes.barh(y + 0.2, np.nan_to_num(auroc), height=0.4, label="AUROC", color="#dd8452")
    axes.set_yticks(y, names, fontsize=7)
    axes.set_xlim(max(0.0, min(math.floor(lowest * 10) / 10, 0.9)), 1.0)  # all 1.0: still a range
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=7)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _render(figure)


class TensorBoardPictures(L.Callback):
    """Face grids with predictions, per-attribute PR curves and a per-attribute test bar chart in TensorBoard.

    Args:
        every_n_epochs: draw the validation face grid every N epochs (0 = never).
        faces: how many validation faces the grid shows (from the first validation batch).
        top_k: how many predicted attributes (and missed ones) each face lists.
        pr_curves: write per-attribute PR curves of the validation split at the end of fit.
        bar_chart: draw the per-attribute test accuracy/AUROC chart after testing.
        reliability: draw the test split's reliability diagram after testing.
        pr_thresholds: points on each PR curve.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        faces: int = 16,
        top_k: int = 3,
        pr_curves: bool = True,
        bar_chart: bool = True,
        pr_thresholds: int = 127,
        reliability: bool = True,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.faces = faces
        self.top_k = top_k
        self.pr_curves = pr_curves
        self.bar_chart = bar_chart
        self.pr_thresholds = pr_thresholds
        self.reliability = reliability
        self._validation: tuple[torch.Tensor, torch.Tensor] | None = None  # last epoch's (probs, labels)

    def _grid_due(self, trainer: L.Trainer) -> bool:
        return (
            self.every_n_epochs > 0
            and self.faces > 0
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or not trainer.is_global_zero or not self._grid_due(trainer):
            return
        writer = tensorboard_writer(trainer)
        images, labels, _ = pl_module._unpack(batch)
        if writer is None or images is None:
            return
        images, labels = images[: self.faces], labels[: self.faces]
        precision = trainer.precision_plugin
        with torch.no_grad(), precision.forward_context():
            probs = torch.sigmoid(pl_module(precision.convert_input(images)).float())
        pixels = (images.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        grid = face_grid(pixels, probs.cpu().numpy(), labels.cpu().numpy(), pl_module.attributes, self.top_k)
        writer.add_image("val/faces", grid, trainer.global_step, dataformats="HWC")
        writer.flush()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # Runs before the module's own hook, which computes and resets the metrics: their AUROC state holds every
        # validation probability and label of the epoch (gathered from all ranks by sync_context).
        if not self.pr_curves or trainer.sanity_checking:
            return
        auroc = pl_module.metrics["val"].auroc
        if not auroc.preds:
            return
        with auroc.sync_context():
            probs, labels = dim_zero_cat(auroc.preds), dim_zero_cat(auroc.target)
        if trainer.is_global_zero:
            self._validation = probs.detach().float().cpu(), labels.detach().cpu()

    def on_train_end(self, trainer, pl_module) -> None:
        writer = tensorboard_writer(trainer) if trainer.is_global_zero else None
        if writer is None or self._validation is None:
            return
        probs, labels = self._validation
        for index, name in enumerate(pl_module.attributes):
            known = labels[:, index] != UNKNOWN_LABEL
            writer.add_pr_curve(
                f"val/pr_curve/{name}",
                labels[known, index],
                probs[known, index],
                trainer.global_step,
                num_thresholds=self.pr_thresholds,
            )
        writer.flush()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        # Before the module's own hook computes and resets the metrics, which hold the test probabilities and labels.
        if not self.reliability or not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            return
        probs, labels = pl_module.metrics["test"].samples()  # gathered from every rank: all ranks call it
        writer = tensorboard_writer(trainer) if trainer.is_global_zero else None
        if writer is None or len(probs) == 0:
            return
        from faceattr.reliability import reliability_figure

        figure = reliability_figure(probs.float().cpu(), labels.cpu(), pl_module.attributes)
        writer.add_image("test/reliability", _render(figure), trainer.global_step, dataformats="HWC")
        writer.flush()

    def on_test_end(self, trainer, pl_module) -> None:
        writer = tensorboard_writer(trainer) if trainer.is_global_zero and self.bar_chart else None
        results = pl_module.results.get("test")
        if writer is None or not results:
            return
        chart = attribute_bar_chart(
            results["per_attribute"],
            f"test: accuracy and AUROC per attribute ({results['macro']['num_images']} images)",
        )
        writer.add_image("test/per_attribute", chart, trainer.global_step, dataformats="HWC")
        writer.flush()
