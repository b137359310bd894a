"""Turn a trained FaceAttrModule into self-contained TorchScript / ONNX artefacts.

Both artefacts keep the model's contract (``faceattr/contract.py``): input ``images`` float32 ``(N, 3, H, W)``, RGB
in [0, 1], at the model's input size (any N); output ``probabilities`` float32 ``(N, num_attributes)``.
Normalization and the sigmoid are inside, so the TorchScript file runs with torch alone and the ONNX file with ONNX
Runtime alone. Both carry the export's ``faceattr.json`` (the contract and the export's figures): an extra file of
the TorchScript archive, ``metadata_props`` of the ONNX model; readers load them with ``faceattr/artefacts.py``.
Both are serialized in memory and written atomically (:mod:`faceattr.atomic`): an artefact is complete or absent.

The module comes from a checkpoint through :func:`faceattr.model.loading.load_module`, which reads it with
:mod:`faceattr.checkpoint`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from faceattr.artefacts import quiet_torchscript
from faceattr.atomic import write_bytes
from faceattr.contract import INPUT_NAME, OUTPUT_NAME
from faceattr.errors import UserError
from faceattr.layout import METADATA_FILE


class ProbabilityModel(nn.Module):
    """[0, 1] RGB images -> attribute probabilities: normalization, the backbone and the sigmoid in one module."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().clone().float().view(1, 3, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((images - self.mean) / self.std))


def probability_model(module) -> ProbabilityModel:
    """The exportable part of a FaceAttrModule (no loss, metrics or optimizer state)."""
    return ProbabilityModel(module.net, module.mean, module.std).eval()


def export_torchscript(model: ProbabilityModel, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """Trace ``model`` on ``example`` and save it with ``faceattr.json`` inside (atomically); returns ``path``."""
    buffer = io.BytesIO()
    with quiet_torchscript(), torch.no_grad():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return write_bytes(path, buffer.getbuffer(), hint="output_dir=...")


def export_onnx(
    model: ProbabilityModel, example: torch.Tensor, path: Path, metadata: dict[str, Any], opset: int | None = None
) -> Path:
    """Export with the torch.onnx (dynamo) exporter, batch axis dynamic, metadata in ``metadata_props``; the model
    is serialized in memory and written atomically; returns ``path``."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    log = io.StringIO()
    logging.disable(logging.INFO)  # the exporter's optimizer passes log at INFO ("Removed 137 unused nodes")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
                **kwargs,
            )
            proto = program.model_proto
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"ONNX export failed ({first}); export=torchscript still works for this model") from None
    finally:
        logging.disable(logging.NOTSET)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_FILE, json.dumps(metadata)
    return write_bytes(path, proto.SerializeToString(), hint="output_dir=...")
