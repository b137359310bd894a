"""The schema of ``conf/export.yaml`` (``export_schema``), which Hydra composes onto: every key's type and what its
value must be. Every value, and what it means, is in the YAML (the fields here are ``MISSING``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from faceattr.constraints import BATCH_SIZE, NON_NEGATIVE, WORKERS, at_least, between, one_of, setting

#: export.calibration's values: the artefacts' probabilities as the model gives them, or temperature-scaled.
CALIBRATIONS = ("none", "temperature")
#: export.quantize's values (faceattr/export/quantize.py's QUANTIZE).
QUANTIZE = ("none", "int8")


@dataclass
class ParityConfig:
    num_images: int = setting(
        MISSING, check=at_least(1), problem="expected an integer >= 1 (the parity check needs at least one image)"
    )
    atol: float = NON_NEGATIVE.field(MISSING)


@dataclass
class CalibrationConfig:
    max_images: Optional[int] = setting(MISSING, check=at_least(0), problem="expected null or an integer >= 0")
    default_threshold: float = setting(MISSING, check=between(0, 1), problem="expected a number in [0, 1]")
    batch_size: int = BATCH_SIZE.field(MISSING)
    num_workers: int = WORKERS.field(MISSING)


@dataclass
class QuantizeConfig:
    num_images: int = setting(
        MISSING, check=at_least(1), problem="expected an integer >= 1 (calibration needs at least one image)"
    )
    max_auroc_drop: float = setting(MISSING, problem="expected a number, e.g. 0.005")


@dataclass
class ExportFormatConfig:
    formats: list[str] = setting(MISSING, problem="expected a list, e.g. [onnx]")
    opset: Optional[int] = setting(MISSING, check=at_least(7), problem="expected null or an ONNX opset >= 7")
    calibration: str = setting(MISSING, check=one_of(CALIBRATIONS), problem="expected none or temperature")
    quantize: str = setting(MISSING, check=one_of(QUANTIZE), problem="expected none or int8")


@dataclass
class ExportConfig:
    ckpt: str = setting(MISSING, check=lambda v: v.strip() != "", problem="expected a .ckpt file, run dir or sweep dir")
    name: str = setting(MISSING, check=lambda v: v != "", problem="expected a BentoML model name")
    store: bool = MISSING
    output_dir: Optional[str] = setting(MISSING, problem="expected a path or null")
    data_root: Optional[str] = setting(MISSING, problem="expected a path or null")
    test_metrics: bool = MISSING
    groups: Optional[list[str]] = setting(MISSING, problem="expected null or a list of attribute names, e.g. [Male]")
    parity: ParityConfig = field(default_factory=ParityConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    # The group conf/export/ (export=onnx | torchscript).
    export: ExportFormatConfig = field(default_factory=ExportFormatConfig)
