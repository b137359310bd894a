"""The int8 ONNX artefact (``export.quantize=int8``): ONNX Runtime's static quantization and its measured cost.

A CPU without a GPU runs an 8-bit integer model about twice as fast as the fp32 one (issue 23). The int8 artefact is
made from the fp32 ONNX artefact by ``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel int8
weights, uint8 activations, MinMax ranges) calibrated on validation images preprocessed the way the service
preprocesses uploads (the uint8 inputs export already reads). It is then judged on the run's test split against the
fp32 ONNX artefact, both run by ONNX Runtime on the same inputs: macro AUROC of each and the drop, mean accuracy at
the contract's thresholds, each attribute's accuracy change and the largest |probability difference|
(:class:`faceattr.contract.Int8Figures`). Export refuses an int8 artefact whose macro AUROC drops by more than
``quantize.max_auroc_drop``: that drop, not the fp32 artefacts' 1e-4 parity, is int8's tolerance.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceattr.artefacts import onnx_session
from faceattr.atomic import write_bytes
from faceattr.contract import CONTRACT_KEY, Int8Figures, ModelContract
from faceattr.errors import UserError
from faceattr.export.calibrate import decision_metrics, split_metrics
from faceattr.layout import ARTEFACT_FILES, INT8_ARTEFACT, METADATA_FILE

log = logging.getLogger(__name__)

#: Images per ONNX Runtime call when calibrating and evaluating.
BATCH = 32


def requested(cfg) -> bool:
    return str(cfg.export.get("quantize", "none")) == "int8"


def check_request(cfg, formats: list[str]) -> None:
    """One line before anything slow: int8 is made from the ONNX artefact and judged on the test split."""
    if not requested(cfg):
        return
    if "onnx" not in formats:
        raise UserError(
            f"export.quantize=int8 quantizes the ONNX artefact, which export.formats={formats} does not write: use "
            "export=onnx (or add onnx to export.formats)"
        )
    if not cfg.get("test_metrics", True):
        raise UserError("export.quantize=int8 is judged on the test split, which test_metrics=false turns off")


def _float(images: torch.Tensor) -> np.ndarray:
    return images.numpy().astype(np.float32) / np.float32(255)


def _no_suggestion(record: logging.LogRecord) -> bool:
    """ONNX Runtime logs (on the root logger) a suggestion to run its shape-inference pre-processing first; the
    figures export records are those of the model as quantized here, so the suggestion is noise in its output."""
    return not str(record.msg).startswith("Please consider")


def quantize(fp32: Path, out_dir: Path, inputs: torch.Tensor, contract: ModelContract, metadata: dict) -> Path:
    """The int8 artefact of the fp32 ONNX file ``fp32``, calibrated on ``inputs`` (uint8 ``(N, 3, h, w)``), with
    ``metadata`` inside as the fp32 one has it; written atomically as ``out_dir / ARTEFACT_FILES[INT8_ARTEFACT]``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class CalibrationImages(CalibrationDataReader):
        """The calibration images in batches, as float32 in [0, 1] (what the artefact takes)."""

        def __init__(self) -> None:
            name = contract.input_name
            self.batches = iter([{name: _float(inputs[i : i + BATCH])} for i in range(0, len(inputs), BATCH)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    root = logging.getLogger()
    root.addFilter(_no_suggestion)
    try:
        with tempfile.TemporaryDirectory(prefix="faceattr-quantize-") as tmp:
            target = Path(tmp) / ARTEFACT_FILES[INT8_ARTEFACT]
            quantize_static(
                str(fp32),
                str(target),
                CalibrationImages(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            proto = onnx.load(str(target))
    finally:
        root.removeFilter(_no_suggestion)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_FILE, json.dumps(dict(metadata, format=INT8_ARTEFACT))
    return write_bytes(out_dir / ARTEFACT_FILES[INT8_ARTEFACT], proto.SerializeToString(), hint="output_dir=...")


def _run(path: Path, inputs: torch.Tensor, contract: ModelContract) -> torch.Tensor:
    session = onnx_session(path)
    outputs = [
        session.run([contract.output_name], {contract.input_name: _float(inputs[i : i + BATCH])})[0]
        for i in range(0, len(inputs), BATCH)
    ]
    return torch.from_numpy(np.concatenate(outputs)) if outputs else torch.empty(0, len(contract.attributes))


def _rounded(value: Any) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _per_attribute_acc(probs: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Each attribute's accuracy at its threshold, over its known labels (0/1)."""
    known = labels <= 1
    correct = ((probs >= thresholds.view(1, -1)) == (labels == 1)) & known
    return correct.sum(0).float() / known.sum(0).clamp(min=1).float()


def evaluate(
    fp32: Path, int8: Path, inputs: torch.Tensor, labels: torch.Tensor, contract: ModelContract, calibration_images: int
) -> Int8Figures:
    """Both ONNX artefacts on the test ``inputs`` (uint8) with their ``labels``: the figures of the module doc."""
    if len(inputs) == 0:
        raise UserError("export.quantize=int8 is judged on the test split, and the run has no test images")
    p32, p8 = _run(fp32, inputs, contract), _run(int8, inputs, contract)
    thresholds = torch.tensor(contract.thresholds)
    m32, m8 = split_metrics(p32, labels, thresholds), split_metrics(p8, labels, thresholds)
    auroc32, auroc8 = m32.get("auroc"), m8.get("auroc")
    change = _per_attribute_acc(p8, labels, thresholds) - _per_attribute_acc(p32, labels, thresholds)
    return Int8Figures(
        artefact=ARTEFACT_FILES[INT8_ARTEFACT],
        calibration_images=int(calibration_images),
        test_images=len(inputs),
        auroc_fp32=auroc32,
        auroc_int8=auroc8,
        auroc_drop=None if auroc32 is None or auroc8 is None else round(auroc32 - auroc8, 6),
        acc_fp32=decision_metrics(p32, labels, thresholds)["acc"],
        acc_int8=decision_metrics(p8, labels, thresholds)["acc"],
        acc_change=tuple(_rounded(v) or 0.0 for v in change.tolist()),
        max_abs_delta_p=_rounded((p8 - p32).abs().max()),
    )


def check_drop(figures: Int8Figures, max_drop: float) -> None:
    """Refuse (one line) an int8 artefact whose test macro AUROC drops by more than ``max_drop``."""
    drop = figures.auroc_drop
    if drop is not None and drop > max_drop:
        raise UserError(
            f"the int8 artefact's test macro AUROC drops by {drop:.4f} ({figures.auroc_fp32:.4f} fp32 -> "
            f"{figures.auroc_int8:.4f} int8), more than quantize.max_auroc_drop={max_drop}: nothing was saved to "
            "the store (export without export.quantize=int8, or allow a larger drop)"
        )
    log.info(
        f"  int8:      test macro AUROC {figures.auroc_int8} vs {figures.auroc_fp32} fp32 (drop {drop}, allowed "
        f"{max_drop}); mean acc {figures.acc_int8} vs {figures.acc_fp32}; max |delta p| {figures.max_abs_delta_p} "
        f"({figures.test_images} test images, calibrated on {figures.calibration_images} validation images)"
    )


def add_int8(cfg, contract: ModelContract, files: dict, metadata: dict, out_dir: Path, calibration_inputs, tests):
    """Step 5: the int8 artefact written, judged against the fp32 ONNX one and refused (removed, nothing stored) above
    ``quantize.max_auroc_drop``; ``contract`` with its figures, which ``files`` and ``metadata`` take too."""
    fp32 = out_dir / ARTEFACT_FILES["onnx"]
    t0 = time.time()
    path = quantize(fp32, out_dir, calibration_inputs, contract, metadata)
    log.info(f"{'onnx_int8:':<12} {path} ({path.stat().st_size / 1e6:.2f} MB, {time.time() - t0:.1f}s)")
    figures = evaluate(fp32, path, *tests, contract, len(calibration_inputs))
    try:
        check_drop(figures, float(cfg.quantize.max_auroc_drop))
    except UserError:
        path.unlink(missing_ok=True)
        raise
    contract = contract.with_int8(figures)
    files[ARTEFACT_FILES[INT8_ARTEFACT]] = path
    metadata["formats"][INT8_ARTEFACT] = ARTEFACT_FILES[INT8_ARTEFACT]
    metadata[CONTRACT_KEY] = contract.to_json()
    return contract
