"""eval's per-image half: the split's probabilities, and what follows from them beyond the module's own metrics.

faceattr/evaluation.py runs Lightning's test (or validate) loop with the model's metrics, so its figures equal the
run's ``test/*``. :class:`PredictionCollector` keeps, from that same loop, every image's probabilities and labels
(the very tensors the metrics saw, in loader order) so nothing is run twice. From them this module writes:

- the results by subgroup (faceattr/fairness.py): ``<split>_groups.csv`` and a summary for ``<split>.json``;
- the calibration of every attribute (faceattr/reliability.py): ECE (15 bins) and Brier score, and the reliability
  diagram ``<split>_reliability.png``.

``groups``: ``None`` = CelebA's Male and Young when the data has both columns (nothing otherwise), ``[]`` = off, a
list = those columns (a name the data lacks is a one-line error naming the columns it has). Group membership is
read from the data's labels (``datamodule.group_labels``), never from the model's predictions.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from faceattr.atomic import write_bytes, write_text
from faceattr.fairness import GroupReport, group_report
from faceattr.reliability import brier_score, calibration_error, reliability_figure

log = logging.getLogger(__name__)

#: The group attributes used when ``groups`` is null and the data has them (Mitchell et al.'s age and gender).
DEFAULT_GROUPS = ("Male", "Young")


def group_files(split: str) -> tuple[str, str]:
    """The subgroup table and the reliability diagram of ``split``, in the eval folder."""
    return f"{split}_groups.csv", f"{split}_reliability.png"


class PredictionCollector(L.Callback):
    """Keeps the probabilities (``sigmoid`` of the logits, float32) and labels of every image of a test or
    validation loop, in loader order: a forward hook on the module sees each batch's logits as the metrics do."""

    def __init__(self) -> None:
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self._hook = None

    def _start(self, pl_module: L.LightningModule) -> None:
        self.probs, self.labels = [], []
        self._hook = pl_module.register_forward_hook(
            lambda _module, _inputs, logits: self.probs.append(torch.sigmoid(logits.detach().float()).cpu())
        )

    def _end(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _batch(self, batch) -> None:
        _, labels, _ = batch
        if labels is not None:
            self.labels.append(labels.detach().to(torch.uint8).cpu())

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._end()

    def result(self, num_attributes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs (N, A) float32, labels (N, A) uint8)`` of the loop that ran."""
        if not self.probs:
            return torch.zeros(0, num_attributes), torch.zeros(0, num_attributes, dtype=torch.uint8)
        probs, labels = torch.cat(self.probs), torch.cat(self.labels)
        if len(probs) != len(labels):
            raise RuntimeError(f"{len(probs)} forward passes' outputs for {len(labels)} labelled images")
        return probs, labels


def resolve_groups(setting: Sequence[str] | None, datamodule) -> list[str]:
    """The group attributes to report by (see the module doc); checked against the data's columns."""
    if setting is None:
        columns = set(datamodule.column_names or ())
        return list(DEFAULT_GROUPS) if set(DEFAULT_GROUPS) <= columns else []
    groups = list(dict.fromkeys(str(name) for name in setting))  # each once, in the order given
    if groups:
        datamodule.group_labels("test", groups, "groups")  # a name the data lacks: one line naming its columns
    return groups


def calibration(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-attribute ``ece`` (15 equal-width bins) and ``brier`` (float64 ``(A,)``; NaN without a known label)."""
    return {"ece": calibration_error(probs, labels), "brier": brier_score(probs, labels)}


def write_reliability(path: Path, probs: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> Path:
    """The reliability diagram as a PNG (complete or absent)."""
    figure = reliability_figure(probs, labels, names)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


def subgroup_report(
    datamodule,
    split: str,
    groups: Sequence[str],
    probs: torch.Tensor,
    labels: torch.Tensor,
    attributes: Sequence[str],
    thresholds: torch.Tensor,
    csv_path: Path,
) -> GroupReport | None:
    """The results by ``groups`` of the split's predictions, written to ``csv_path``; ``None`` (with a warning)
    when the loop dropped images (``data.skip_corrupt``), since the rest cannot be matched to their labels."""
    group_labels = datamodule.group_labels(split, list(groups), "groups")
    if len(group_labels) != len(probs):
        log.warning(
            "groups: the %s loop gave %d predictions for %d images (unreadable images skipped): no subgroup report",
            split,
            len(probs),
            len(group_labels),
        )
        return None
    report = group_report(probs, labels, attributes, group_labels, groups, thresholds)
    write_text(csv_path, report.to_csv())
    return report
