"""The schema of ``conf/predict/predict.yaml`` (``predict_schema``), which Hydra composes onto: every key's type and
what its value must be. Every value, and what it means, is in the YAML (the fields here are ``MISSING``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from faceattr.constraints import BATCH_SIZE, THREADS, at_least, one_of, setting


def _not_blank(value: Any) -> bool:
    return str(value).strip() != ""


@dataclass
class PredictConfig:
    model: str = setting(
        MISSING, check=_not_blank, problem="expected a model tag, an export folder, a run dir or .ckpt"
    )
    images: str = setting(MISSING, check=_not_blank, problem="expected a folder of photos or a glob pattern")
    out: str = setting(MISSING, check=_not_blank, problem="expected a CSV file path")
    face: str = setting(MISSING, check=one_of(("auto", "center", "detect")), problem="expected auto, center or detect")
    all_faces: bool = MISSING
    no_face: str = setting(MISSING, check=one_of(("skip", "center")), problem="expected skip or center")
    face_max_side: int = setting(MISSING, check=at_least(32), problem="expected an integer >= 32 (pixels)")
    face_min_score: float = setting(MISSING, check=lambda v: 0 < v < 1, problem="expected a score in (0, 1)")
    batch_size: int = BATCH_SIZE.field(MISSING)
    threads: Optional[int] = THREADS.field(MISSING, optional=True)
    num_threads: Optional[int] = THREADS.field(MISSING, optional=True)
    format: str = setting(
        MISSING, check=one_of(("auto", "torchscript", "onnx")), problem="expected auto, torchscript or onnx"
    )
    precision: str = setting(MISSING, check=one_of(("auto", "fp32", "int8")), problem="expected auto, fp32 or int8")
    device: str = setting(
        MISSING,
        check=lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
        problem="expected auto, cpu, cuda or cuda:N",
    )
