"""Rebuild the Lightning model from a checkpoint and turn it into self-contained TorchScript / ONNX artefacts.

Contract of both artefacts: input ``images`` float32 ``(N, 3, H, W)``, RGB in [0, 1], at the model's input size
(any N); output ``probabilities`` float32 ``(N, num_attributes)``. Normalization and the sigmoid are inside, so
the TorchScript file runs with torch alone (``torch.jit.load``) and the ONNX file with ONNX Runtime alone. Both
carry the export metadata (attribute names, input size, crop, thresholds) as ``faceattr.json``: an extra file of
the TorchScript archive, ``metadata_props`` of the ONNX model. Both are serialized in memory and written atomically
(:mod:`faceattr.atomic`): an artefact is complete or absent.

:func:`read_checkpoint` is the one check that a checkpoint loads, for every reader (export, eval, ``ckpt_path=``,
``resume=``): a file that does not load is refused with one line naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from faceattr.atomic import write_bytes
from faceattr.errors import UserError
from faceattr.layout import INPUT_NAME, METADATA_FILE, OUTPUT_NAME

ZIP_MAGIC = b"PK\x03\x04"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True`` (no pickled code runs), after checking that it is
    a faceattr (Lightning) checkpoint; a one-line UserError saying what the file is otherwise."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint file")
    if not zipfile.is_zipfile(checkpoint):
        with open(checkpoint, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
        if not head:
            raise UserError(
                f"{checkpoint} is not a PyTorch checkpoint: the file is empty (a save cut short by a "
                "full disk or a crash?); use another checkpoint of the run"
            )
        if head == ZIP_MAGIC:
            raise UserError(
                f"{checkpoint} is truncated (an incomplete zip archive: a save cut short by a full disk "
                "or a crash); use another checkpoint of the run"
            )
        raise UserError(
            f"{checkpoint} is not a PyTorch checkpoint (torch.save writes a zip archive; this file is "
            "not one): pass a .ckpt written by train.py"
        )
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"a pickled {found.group(1)}" if found else "pickled objects"
        raise UserError(
            f"refusing to load {checkpoint}: it holds {what}, which weights_only loading does not allow (loading it "
            "unsafely could run code); faceattr checkpoints hold only tensors and plain values"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways
        raise UserError(f"{checkpoint} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise UserError(
            f"{checkpoint} holds a {type(state).__name__}, not a Lightning checkpoint: pass a .ckpt written by train.py"
        )
    if "state_dict" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(
                f"{checkpoint} is a bare state_dict ({len(state)} tensor{'s' if len(state) != 1 else ''}), not a "
                "Lightning checkpoint: export needs the .ckpt written by train.py (it holds the model's "
                "hyper-parameters)"
            )
        keys = ", ".join(map(str, list(state)[:5])) or "none"
        raise UserError(
            f"{checkpoint} is not a Lightning checkpoint (no state_dict; keys: {keys}): pass a .ckpt "
            "written by train.py"
        )
    hparams = state.get("hyper_parameters") or {}
    missing = [key for key in ("backbone", "attributes", "image_size") if key not in hparams]
    if missing:
        raise UserError(
            f"{checkpoint} is a Lightning checkpoint of another model (its hyper_parameters lack "
            f"{', '.join(missing)}): not a faceattr checkpoint from train.py"
        )
    return state


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` does not load as a faceattr checkpoint (the one line of :func:`read_checkpoint`), or None."""
    try:
        read_checkpoint(checkpoint)
    except UserError as exc:
        return str(exc)
    return None


def load_module(checkpoint: Path):
    """The FaceAttrModule of ``checkpoint`` in eval mode on the CPU, rebuilt from the checkpoint alone.

    Loaded with ``weights_only=True`` (no pickled code runs; see :func:`read_checkpoint`); pretrained/weights are
    switched off so nothing is downloaded or read besides the checkpoint.
    """
    from faceattr.model import FaceAttrModule

    hparams = read_checkpoint(checkpoint)["hyper_parameters"]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            module = FaceAttrModule.load_from_checkpoint(
                checkpoint, map_location="cpu", weights_only=True, pretrained=False, weights=None
            )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - many causes: weights of another architecture, missing keys
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = " ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines)
        raise UserError(
            f"cannot load {checkpoint} as a faceattr checkpoint: its weights do not fit a {hparams['backbone']} with "
            f"{len(hparams['attributes'])} attributes ({detail[:240] or type(exc).__name__})"
        ) from None
    return module.eval()


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


@contextlib.contextmanager
def quiet_torchscript():
    """Silence torch.jit's deprecation notices (TorchScript is still the format this project serves)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        yield


def export_torchscript(model: ProbabilityModel, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """Trace ``model`` on ``example`` and save it with ``faceattr.json`` inside (atomically); returns ``path``."""
    buffer = io.BytesIO()
    with quiet_torchscript(), torch.no_grad():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return write_bytes(path, buffer.getbuffer(), hint="output_dir=...")


def load_torchscript(path: Path, device: str = "cpu") -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load a TorchScript artefact and its ``faceattr.json`` metadata."""
    extra = {METADATA_FILE: ""}
    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    raw = extra[METADATA_FILE]
    return module.eval(), json.loads(raw) if raw else {}


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


def onnx_session(path: Path, device: str = "cpu", num_threads: int | None = None):
    """An ONNX Runtime session for ``path`` (CUDA provider when ``device`` is a GPU and it is available)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # No busy-waiting of the thread pool between calls: on a shared CPU it takes cores from decoding and HTTP.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if num_threads:
        options.intra_op_num_threads = num_threads
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_metadata(session) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_FILE)
    return json.loads(raw) if raw else {}
