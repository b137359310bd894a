"""Loading an exported artefact (TorchScript or ONNX) and the ``faceattr.json`` it carries, for every reader.

Export (``faceattr/export/build.py``) writes the artefacts; the service, ``predict.py``, export's own parity check and
the benchmarks load them here, so none of them imports export code and a built Bento ships none. Each artefact
carries the export's metadata (``faceattr.json``, with the model's contract: ``faceattr/contract.py``): an extra
file of the TorchScript archive, ``metadata_props`` of the ONNX model. torch and onnxruntime are imported only by
the loader that needs them.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faceattr.layout import METADATA_FILE


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch.jit's deprecation notices (TorchScript is still a format this project serves)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        yield


def load_torchscript(path: Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A TorchScript artefact in eval mode on ``device``, and its ``faceattr.json`` metadata ({} if it has none)."""
    import torch

    extra = {METADATA_FILE: ""}
    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    raw = extra[METADATA_FILE]
    return module.eval(), json.loads(raw) if raw else {}


def onnx_session(path: Path, device: str = "cpu", num_threads: int | None = None) -> Any:
    """An ONNX Runtime session for ``path`` (CUDA provider when ``device`` is a GPU and it is available)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # No busy-waiting of the thread pool between calls: on a shared CPU it takes cores from decoding and HTTP.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if num_threads:
        options.intra_op_num_threads = num_threads
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_metadata(session: Any) -> dict[str, Any]:
    """The ``faceattr.json`` metadata an ONNX artefact carries ({} if it has none)."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_FILE)
    return json.loads(raw) if raw else {}
