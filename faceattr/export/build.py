"""Turn a trained FaceAttrModule into self-contained TorchScript / ONNX artefacts.

Both artefacts keep the model's contract (``faceattr/contract.py``): input ``images`` float32 ``(N, 3, H, W)``, RGB
in [0, 1], at the model's input size (any N); output ``probabilities`` float32 ``(N, num_attributes)``.
Normalization, the contract's per-attribute temperatures (``sigmoid(logit / T)``, ``export.calibration=temperature``;
1 otherwise) and the sigmoid are inside, so the TorchScript file runs with torch alone and the ONNX file with ONNX
Runtime alone, and every reader of an artefact (the service, ``predict.py``) gets the same scaled probabilities.
Both carry the export's ``faceattr.json`` (the contract and the export's figures): an extra file of the TorchScript
archive, ``metadata_props`` of the ONNX model; readers load them with ``faceattr/artefacts.py``.
Both are serialized in memory and written atomically (:mod:`faceattr.atomic`): an artefact is complete or absent.

The module comes from a checkpoint through :func:`faceattr.model.loading.load_module`, which reads it with
:mod:`faceattr.checkpoint`. :func:`write_checked` writes each format and checks it against the Lightning model's
(temperature-scaled) probabilities: the parity check, which refuses an artefact that disagrees.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from faceattr.artefacts import load_torchscript, onnx_session, quiet_torchscript
from faceattr.atomic import write_bytes
from faceattr.contract import INPUT_NAME, OUTPUT_NAME, ModelContract
from faceattr.errors import UserError
from faceattr.layout import ARTEFACT_FILES, METADATA_FILE

log = logging.getLogger(__name__)


class ProbabilityModel(nn.Module):
    """[0, 1] RGB images -> attribute probabilities: normalization, the backbone, the temperatures and the sigmoid in
    one module."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, temperatures: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().clone().float().view(1, 3, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, 3, 1, 1))
        self.register_buffer("temperatures", temperatures.detach().clone().float().view(1, -1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((images - self.mean) / self.std) / self.temperatures)


def probability_model(module, temperatures: Sequence[float] | None = None) -> ProbabilityModel:
    """The exportable part of a FaceAttrModule (no loss, metrics or optimizer state), outputting
    ``sigmoid(logit / T)`` with one temperature per attribute (None: all 1, the plain sigmoid)."""
    count = len(module.contract.attributes)
    values = torch.ones(count) if temperatures is None else torch.tensor([float(t) for t in temperatures])
    return ProbabilityModel(module.net, module.mean, module.std, values).eval()


def scaled_probabilities(logits: torch.Tensor, temperatures: Sequence[float]) -> torch.Tensor:
    """``sigmoid(logits / T)`` per attribute: what the artefacts output for the Lightning model's ``logits``."""
    return torch.sigmoid(logits.float() / torch.tensor([float(t) for t in temperatures]).view(1, -1))


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
    chatter = io.StringIO()
    logging.disable(logging.INFO)  # the exporter's optimizer passes log at INFO ("Removed 137 unused nodes")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
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


def _parity(run, inputs: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest |difference| between ``run(inputs)`` and ``reference``: all images in one batch, then the first
    three one at a time (a batch size other than the traced one)."""
    floats = inputs.float().div(255)
    diff = float((run(floats) - reference).abs().max()) if len(floats) else 0.0
    for i in range(min(3, len(floats))):
        diff = max(diff, float((run(floats[i : i + 1]) - reference[i : i + 1]).abs().max()))
    return diff


def _runner(fmt: str, path: Path, contract: ModelContract):
    """``run(images) -> probabilities`` of the artefact at ``path``, loaded as its readers load it."""
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


@dataclass(frozen=True)
class ParityImages:
    """The images of the parity check and the Lightning model's (temperature-scaled) probabilities on them."""

    inputs: torch.Tensor  # uint8 (N, 3, h, w)
    reference: torch.Tensor  # float (N, A)
    source: str  # what they are, for the log and the metadata


def write_checked(
    module,
    contract: ModelContract,
    formats: Sequence[str],
    parity: ParityImages,
    metadata: dict[str, Any],
    out_dir: Path,
    atol: float,
    opset: int | None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Each format of ``formats`` written atomically into ``out_dir`` with ``metadata`` inside, then parity-checked
    against ``parity.reference``; UserError (nothing stored) above ``atol``. Returns {stored name: path} and the
    parity figures per format."""
    inputs = parity.inputs
    example = inputs[:2].float().div(255) if len(inputs) >= 2 else torch.rand(2, 3, *contract.image_size)
    exported = probability_model(module, contract.temperatures)
    files: dict[str, Path] = {}
    figures: dict[str, Any] = {}
    for fmt in formats:
        path = out_dir / ARTEFACT_FILES[fmt]
        t0 = time.time()
        embedded = dict(metadata, format=fmt)
        if fmt == "torchscript":
            export_torchscript(exported, example, path, embedded)
        else:
            export_onnx(exported, example, path, embedded, opset)
        seconds = time.time() - t0
        diff = _parity(_runner(fmt, path, contract), inputs, parity.reference)
        figures[fmt] = {"max_abs_diff": diff, "atol": atol, "images": parity.source, "export_s": round(seconds, 2)}
        scaled = " (temperature-scaled)" if contract.temperature_scaled else ""
        log.info(
            f"{fmt + ':':<12} {path} ({path.stat().st_size / 1e6:.2f} MB, {seconds:.1f}s); parity vs Lightning"
            f"{scaled} on {parity.source}: max |diff| = {diff:.2e} (atol {atol:.0e})"
        )
        if not diff <= atol:  # also catches NaN
            raise UserError(
                f"parity check failed for {fmt}: max |probability difference| vs the Lightning model = {diff:.3e} > "
                f"parity.atol={atol:g} on {parity.source}; {path} is NOT saved to the model store"
            )
        files[ARTEFACT_FILES[fmt]] = path
    return files, figures
