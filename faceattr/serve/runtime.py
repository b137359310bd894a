"""The served model: finding it in the BentoML store, reading its contract, loading its artefact, running batches.

Artefacts are loaded only from the BentoML model store (``bentoml.models.get``): the service never loads a file
from a path it was given. What the model needs (input size, crop, decode rule, thresholds, face template, the face
mode it was trained for) is its contract (``faceattr/contract.py``), read from the export's ``faceattr.json``: a
model exported by an older faceattr is refused with one line saying to export it again. Beside it in the model's
folder: the model card (``MODEL_CARD.md``, which export writes and ``GET /model_card`` answers).

torch is imported only to run a TorchScript artefact or to look for a GPU on a machine that has one: an ONNX model on
a CPU is served with numpy and onnxruntime alone (the CPU Bento, ``bentofile.cpu.yaml``, ships no torch).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceattr.artefacts import load_torchscript, onnx_session
from faceattr.contract import ContractError, ModelContract, read_contract
from faceattr.layout import INT8_ARTEFACT, METADATA_FILE, MODEL_CARD_FILE
from faceattr.serve.config import FACE_AUTO, ServeConfig, ServeConfigError, bento_root, served_artefact

if TYPE_CHECKING:
    import bentoml

EXPORT_HINT = "run `python export.py ckpt=<run dir>` first (see docs/serving.md)"


class ModelError(RuntimeError):
    """The configured model cannot be served (missing, incomplete, wrong format); one line saying what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """A stored (or exported) model, read without loading its artefact: its contract and its artefact files."""

    tag: str
    path: Path
    contract: ModelContract
    formats: dict[str, str]
    #: The whole ``faceattr.json`` (the contract, the export's figures and provenance).
    metadata: dict[str, Any]

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.contract.attributes

    @property
    def image_size(self) -> tuple[int, int]:
        return self.contract.image_size

    @property
    def crop(self) -> tuple[int, int] | None:
        return self.contract.crop

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self.contract.thresholds

    @property
    def face_template(self) -> tuple[tuple[float, float], ...] | None:
        """Where the model's training faces had their 5 landmarks (None: CelebA's template applies)."""
        return self.contract.face_template

    @property
    def jpeg_scaling(self) -> bool:
        """Whether uploads' JPEGs are decoded at a reduced scale, as the model's training images were."""
        return self.contract.jpeg_scaling

    @property
    def default_face_mode(self) -> str:
        """The ``face`` mode the model was trained for (its contract's): detect for detector-aligned training faces."""
        return self.contract.default_face_mode

    @property
    def card_path(self) -> Path:
        """Where export writes the model card: the model's own folder (absent for a model exported without one)."""
        return self.path / MODEL_CARD_FILE

    def model_card(self) -> str | None:
        """The model card's Markdown, or None when the model was exported without one (an older faceattr)."""
        try:
            return self.card_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def test_rates(self, key: str) -> dict[str, float]:
        """``{attribute: rate}`` of the test split that export recorded under ``metrics.test.<key>``
        (``positive_rates``: the share of the labels that are 1; ``predicted_positive_rates``: the share of the images
        the model, at its thresholds, called present), for the attributes the model has and that have a rate; {} when
        the export measured none (``test_metrics=false``, an older export)."""
        metrics = self.metadata.get("metrics")
        test = metrics.get("test") if isinstance(metrics, dict) else None
        rates = test.get(key) if isinstance(test, dict) else None
        if not isinstance(rates, dict):
            return {}
        return {name: float(rates[name]) for name in self.attributes if isinstance(rates.get(name), (int, float))}

    def artefact(self, fmt: str) -> Path:
        if fmt not in self.formats:
            have = ", ".join(self.formats) or "none"
            if fmt == INT8_ARTEFACT:
                raise ModelError(
                    f"model {self.tag} has no int8 artefact (it has: {have}); export it with `python export.py "
                    "ckpt=... export.quantize=int8` or set FACEATTR_SERVE_PRECISION=fp32"
                )
            raise ModelError(
                f"model {self.tag} has no {fmt} artefact (it has: {have}); export it with "
                f"`python export.py ckpt=... export={fmt}` or set FACEATTR_SERVE_FORMAT to one it has"
            )
        path = self.path / self.formats[fmt]
        if Path(self.formats[fmt]).name != self.formats[fmt] or not path.resolve().is_relative_to(self.path.resolve()):
            raise ModelError(
                f"model {self.tag}: {METADATA_FILE} names the {fmt} artefact {self.formats[fmt]!r}, which "
                "is not a file of the model's own folder in the store; export it again"
            )
        if not path.is_file():
            raise ModelError(f"model {self.tag} is incomplete: {path} is missing; export it again")
        return path

    def thresholds_for(self, config: ServeConfig) -> np.ndarray:
        if config.threshold_mode == "fixed":
            return np.full(len(self.attributes), config.threshold, dtype=np.float32)
        return np.asarray(self.thresholds, dtype=np.float32)


def store_location() -> str:
    return os.environ.get("BENTOML_HOME", "~/bentoml") + "/models"


def bento_models() -> list[str]:
    """Model tags packaged in the Bento this service runs from (see ``config.bento_root``), else []."""
    root = bento_root()
    if root is None:
        return []
    bento_yaml = root / "bento.yaml"
    try:
        import yaml

        info = yaml.safe_load(bento_yaml.read_text()) or {}
    except (OSError, ValueError):
        return []
    tags = [m.get("tag") for m in info.get("models") or [] if isinstance(m, dict)]
    for service in info.get("services") or []:
        tags += [m.get("tag") for m in service.get("models") or [] if isinstance(m, dict)]
    return [str(tag) for tag in dict.fromkeys(tags) if tag]


def model_tag(config: ServeConfig) -> str:
    """The tag to serve: ``config.model`` as given, except that a bare name inside a Bento means the version the
    Bento was built with (not the store's latest, which may be newer)."""
    if ":" in config.model:
        return config.model
    packaged = [tag for tag in bento_models() if tag.split(":", 1)[0] == config.model]
    return packaged[0] if packaged else config.model


def stored_model(config: ServeConfig) -> bentoml.Model:
    """The model to serve (:func:`model_tag`: ``name`` = latest version, or ``name:version``) in the local BentoML
    store; its ``tag`` is the exact ``name:version``."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    tag = model_tag(config)
    if "/" in tag or "\\" in tag or tag.startswith("."):
        raise ModelError(
            f"FACEATTR_SERVE_MODEL={config.model!r} is a path: the service loads models only from the BentoML model "
            f"store, by tag (name or name:version; `bentoml models list`); {EXPORT_HINT}"
        )
    try:
        model = bentoml.models.get(tag)
    except NotFound:
        raise ModelError(
            f"no model {config.model!r} in the BentoML model store ({store_location()}): {EXPORT_HINT}"
        ) from None
    except (BentoMLException, ValueError) as exc:  # an invalid tag
        raise ModelError(
            f"FACEATTR_SERVE_MODEL={config.model!r} is not a model tag (name or name:version): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return model


def resolve_model(config: ServeConfig) -> ModelInfo:
    """What the service needs to know about the model to serve (:func:`stored_model`), from its metadata."""
    model = stored_model(config)
    return read_model_info(Path(model.path), str(model.tag))


def read_model_info(path: Path, tag: str) -> ModelInfo:
    """The :class:`ModelInfo` of the export in folder ``path`` (a model of the store, or an export's output folder:
    its ``faceattr.json`` beside the artefacts), called ``tag`` in answers and messages."""
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except (OSError, ValueError):
        raise ModelError(
            f"model {tag} has no readable {METADATA_FILE}: it was not written by faceattr's export; {EXPORT_HINT}"
        ) from None
    if not isinstance(metadata, dict):
        raise ModelError(f"model {tag}: {METADATA_FILE} is not a JSON object; {EXPORT_HINT}")
    try:
        contract = read_contract(metadata, f"model {tag}")
    except ContractError as exc:
        raise ModelError(str(exc)) from None
    formats = metadata.get("formats") or {}
    if not isinstance(formats, dict) or not all(isinstance(v, str) for v in formats.values()):
        raise ModelError(f"model {tag}: {METADATA_FILE} lists its artefacts wrongly ({formats!r}); {EXPORT_HINT}")
    return ModelInfo(tag=tag, path=path, contract=contract, formats=dict(formats), metadata=metadata)


def served_format(config: ServeConfig, info: ModelInfo, device: str) -> str:
    """The artefact to run: ``config.format``, or for ``auto`` ONNX Runtime on a CPU when the model has an ONNX
    artefact (faster than TorchScript there at batch 1 and 32: BENCHMARKS.md, Inference, ``onnx_vs_torchscript_b32``),
    else TorchScript."""
    if config.format != "auto":
        return config.format
    return "onnx" if "onnx" in info.formats and device == "cpu" else "torchscript"


def served_face(config: ServeConfig, info: ModelInfo) -> ServeConfig:
    """``config`` with the ``face`` default decided: ``auto`` is the model's own (:attr:`ModelInfo.default_face_mode`:
    detect for a model trained on detector-aligned faces, ``data.align=detect``, else center); an explicit center or
    detect (a settings file, FACEATTR_SERVE_FACE) is kept. A request's ``face`` field still chooses for itself."""
    if config.face != FACE_AUTO:
        return config
    return dataclasses.replace(config, face=info.default_face_mode)


def served_model(config: ServeConfig, tag: str) -> tuple[ServeConfig, ModelInfo]:
    """Model ``tag`` (an exact ``name:version``, as :func:`stored_model` found it) read from the store, and ``config``
    with the artefact format to run (:func:`served_format`, checked to exist) and the face default
    (:func:`served_face`) decided."""
    model = resolve_model(dataclasses.replace(config, model=tag))
    device = pick_device(config.device)
    config = dataclasses.replace(config, format=served_format(config, model, device))
    artefact_to_run(config, model, device)  # the one the workers will load, checked before any worker starts
    return served_face(config, model), model


def artefact_to_run(config: ServeConfig, info: ModelInfo, device: str) -> tuple[str, Path]:
    """The key (in the model's ``formats``) and the file of the artefact that ``config`` runs on ``device``, its
    ``format`` decided: :func:`served_artefact` (``precision``: the int8 ONNX one, or the format's fp32 one), checked
    to exist; ModelError otherwise."""
    try:
        key = served_artefact(config, info.formats, device)
    except ServeConfigError as exc:
        raise ModelError(str(exc)) from None
    return key, info.artefact(key)


#: Device files of a GPU driver (NVIDIA's; ROCm's, which torch also calls ``cuda``): without one, no GPU is visible.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")


def gpu_possible() -> bool:
    """Whether a GPU may be visible to torch, known without importing it (which costs ~700 MB of RSS and ~2 s): a GPU
    driver's device file exists and ``CUDA_VISIBLE_DEVICES`` does not hide every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return any(os.path.exists(path) for path in GPU_DEVICE_FILES)


def cuda_available() -> bool:
    """torch sees a CUDA device (torch imported only where a GPU driver is present; no torch installed: False)."""
    if not gpu_possible():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise ModelError(f"FACEATTR_SERVE_DEVICE={device}: no CUDA device is visible; use device=cpu or auto")
    return device


class Predictor:
    """Runs the model's TorchScript or ONNX artefact on uint8 batches ``(N, 3, h, w)`` -> float32 ``(N, A)``.

    The ONNX artefact runs on numpy (float32 in ``[0, 1]``) through onnxruntime; only the TorchScript one imports
    torch."""

    def __init__(self, info: ModelInfo, config: ServeConfig) -> None:
        self.info = info
        self.format = config.format
        self.device = pick_device(config.device)
        self.artefact, path = artefact_to_run(config, info, self.device)  # the format's fp32 one, or int8
        if self.format == "torchscript":
            try:
                import torch
            except ImportError:
                raise ModelError(
                    "format=torchscript needs torch, which this environment lacks (a CPU Bento ships none): serve "
                    "the model's ONNX artefact (format=onnx or auto), or install torch"
                ) from None
            if config.num_threads:
                torch.set_num_threads(config.num_threads)
            self.module, _ = load_torchscript(path, self.device)
            self.session = None
        else:
            try:
                self.session = onnx_session(path, self.device, config.num_threads)
            except ImportError as exc:  # pragma: no cover - onnxruntime missing from a deployment image
                raise ModelError(f"format=onnx needs onnxruntime: {exc}") from None
            self.module = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        expected = (3, *self.info.image_size)
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected uint8 images (N, {', '.join(map(str, expected))}), got {images.dtype} {images.shape}"
            )
        if len(images) == 0:
            return np.zeros((0, len(self.info.attributes)), dtype=np.float32)
        if self.module is not None:
            import torch  # already imported by __init__ for a TorchScript artefact

            with torch.inference_mode():
                batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).float().div_(255)
                return self.module(batch).float().cpu().numpy()
        batch = images.astype(np.float32) / np.float32(255)
        contract = self.info.contract
        return self.session.run([contract.output_name], {contract.input_name: batch})[0]
