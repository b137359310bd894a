"""The names of everything faceattr writes, in one place: the run directory, the export folder, the artefacts.

A run dir (``outputs/<date>/<time>-<id>/``, or one job of a sweep ``multirun/<date>/<time>-<id>/<n>/``)::

    run.json            the run record (status, scores, best checkpoint, test table): RUN_RECORD
    config.yaml         the resolved training config: RUN_CONFIG
    checkpoints/        CHECKPOINT_DIR: the best checkpoint(s) and LAST_CHECKPOINT (last.ckpt, for resume=)
    tensorboard/        TENSORBOARD_DIR: TensorBoard events (a sweep job's one level down, named by its overrides)
    eval/               EVAL_DIR: eval.py's <split>.json and <split>_per_attribute.csv
    metric_history.json METRIC_HISTORY: a sweep job's per-epoch monitored metric (median pruning)
    split.csv           SPLIT_RECORD: the image -> train/valid/test (and fold) assignment of a data=folder run made
                        without a split column, so eval and export reuse it
    export/             EXPORT_DIR: model.pt / model.onnx (/ model.int8.onnx), faceattr.json, config.yaml

The export's metadata (with the model's contract, faceattr/contract.py, which also names the artefacts' tensors)
travels as METADATA_FILE inside each artefact and beside them. The YAML configs spell ``checkpoints`` and
``tensorboard`` too (conf/callbacks/default.yaml, conf/logger/tensorboard.yaml); a test checks that they agree.
"""

from __future__ import annotations

from pathlib import Path

RUN_RECORD = "run.json"
RUN_CONFIG = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
EXPORT_DIR = "export"
# A sweep job's monitored metric per validation epoch (median pruning of Optuna trials reads the others').
METRIC_HISTORY = "metric_history.json"

# Export: the artefact of each format (onnx_int8: the int8 ONNX model of export.quantize=int8), the metadata and the
# configs saved beside them.
# The key of the int8 ONNX artefact in ARTEFACT_FILES and in a model's `formats` (export.quantize=int8; served by
# the serve setting `precision`).
INT8_ARTEFACT = "onnx_int8"
ARTEFACT_FILES = {"torchscript": "model.pt", "onnx": "model.onnx", INT8_ARTEFACT: "model.int8.onnx"}
# The formats export.formats may list (onnx_int8 is made from onnx by export.quantize=int8).
EXPORT_FORMATS = ("torchscript", "onnx")
METADATA_FILE = "faceattr.json"
EXPORT_CONFIG = "config.yaml"
# The model card (Mitchell et al. 2019) written at export beside the artefacts and into the store's model folder.
MODEL_CARD_FILE = "MODEL_CARD.md"
# A run's split assignment (data=folder without a split column): path,split per image.
SPLIT_RECORD = "split.csv"


def eval_files(split: str) -> tuple[str, str]:
    """eval.py's macro figures and per-attribute table for ``split``."""
    return f"{split}.json", f"{split}_per_attribute.csv"


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
