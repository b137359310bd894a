"""The model's contract: what a trained faceattr model carries, in one typed, versioned, frozen dataclass.

Everything that must agree between training, export, serving, ``predict.py`` and eval about a model is a field of
:class:`ModelContract`: the attribute names (one output each, in order), the input size, the crop of the aligned
frame, the JPEG decode rule, the normalization, the decision thresholds and how they were set, the face template
detected faces are aligned onto, and the exported artefacts' tensor names. As timm derives a model's transforms from
its ``PretrainedCfg``, every reader derives its preprocessing from this one object:

* the LightningModule builds it from its hyper-parameters (:meth:`ModelContract.from_hparams`, thresholds 0.5);
* export calibrates it (:meth:`with_thresholds`, :meth:`with_face_template`) and writes it, once, as the
  ``contract`` entry of ``faceattr.json`` (beside the artefacts, inside each artefact and in the BentoML metadata);
* the service and ``predict.py`` read it back with :func:`read_contract`, which refuses a missing or unknown
  ``format_version`` in one line; eval rebuilds it from the checkpoint, as export does.

:data:`FORMAT_VERSION` changes whenever a field, or the meaning of one, changes; ``preprocess_rule`` records the
version of the image rule (``faceattr/preprocess.py``'s ``RULE_VERSION``) the model was trained on. A model exported
under another version of either is refused with one line saying to export it again (and, for another image rule, to
train it again), never served with pixels it was not trained on. No torch, no framework: numpy and Pillow at most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from faceattr.preprocess import RULE_VERSION, size_pair

#: The contract's version; see the module doc. 2 is the first typed contract (earlier exports had none); 3 adds
#: ``temperatures`` and ``face_alignment`` (a version-2 contract reads as temperatures 1 and CelebA's alignment); 4 adds
#: ``int8`` (the int8 artefact's measured cost; versions 2 and 3 read as a model without one).
FORMAT_VERSION = 4
#: The versions this faceattr reads.
READABLE_VERSIONS = (2, 3, 4)
#: How the training images were aligned: "celeba" (CelebA's aligned files, or files framed like them) or "detect"
#: (faceattr's face detector and alignment, ``data.align=detect``: the service then detects faces by default).
FACE_ALIGNMENTS = ("celeba", "detect")
#: The exported artefacts' input and output tensor names (ONNX graph names; the TorchScript forward's argument).
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
#: The key of faceattr.json (and of the BentoML metadata) that holds the contract.
CONTRACT_KEY = "contract"
#: Thresholds before calibration.
DEFAULT_THRESHOLD = 0.5


class ContractError(ValueError):
    """A contract that cannot be read (absent, another format version, a missing or malformed field); one line."""


def _pair(value: Any, what: str) -> tuple[int, int]:
    try:
        return size_pair(value)
    except ValueError:
        raise ContractError(f"{what} must be [height, width] of positive integers, not {value!r}") from None


@dataclass(frozen=True)
class Int8Figures:
    """The int8 ONNX artefact (``export.quantize=int8``) against the fp32 one on the test split, both run by ONNX
    Runtime on the same preprocessed images: what quantization cost (faceattr/export/quantize.py)."""

    artefact: str  # its file name beside the other artefacts
    calibration_images: int  # validation images its activation ranges were calibrated on
    test_images: int
    auroc_fp32: float | None  # macro AUROC (None: no attribute has both classes in the test labels)
    auroc_int8: float | None
    auroc_drop: float | None  # fp32 - int8: what export refuses above quantize.max_auroc_drop
    acc_fp32: float  # mean accuracy at the contract's thresholds
    acc_int8: float
    acc_change: tuple[float, ...]  # per attribute (in attribute order): int8 accuracy - fp32 accuracy
    max_abs_delta_p: float | None  # the largest |int8 probability - fp32 probability|

    def to_json(self, attributes: Sequence[str]) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["acc_change"] = dict(zip(attributes, self.acc_change))
        return values

    @classmethod
    def from_json(cls, data: Mapping[str, Any], attributes: Sequence[str]) -> Int8Figures:
        change = data.get("acc_change") or {}
        optional = {name: None if data.get(name) is None else float(data[name]) for name in _OPTIONAL_INT8}
        return cls(
            artefact=str(data["artefact"]),
            calibration_images=int(data["calibration_images"]),
            test_images=int(data["test_images"]),
            acc_fp32=float(data["acc_fp32"]),
            acc_int8=float(data["acc_int8"]),
            acc_change=tuple(float(change.get(name, 0.0)) for name in attributes),
            **optional,
        )


_OPTIONAL_INT8 = ("auroc_fp32", "auroc_int8", "auroc_drop", "max_abs_delta_p")


@dataclass(frozen=True)
class ModelContract:
    """What a trained model carries: enough to preprocess its inputs and read its outputs, nothing else.

    The artefacts take float32 ``(N, 3, *image_size)`` RGB images in [0, 1] named :data:`INPUT_NAME` (normalization
    by ``mean``/``std`` is inside them) and return float32 ``(N, len(attributes))`` sigmoid probabilities named
    :data:`OUTPUT_NAME`. An upload becomes such an image by ``faceattr.preprocess``: decoded (JPEGs at a reduced DCT
    scale when ``jpeg_scaling``), the centred aligned frame's ``crop`` (None: the whole frame), resized to
    ``image_size``; with face detection, the face is first aligned onto ``face_template``.
    """

    backbone: str
    attributes: tuple[str, ...]
    image_size: tuple[int, int]
    crop: tuple[int, int] | None
    jpeg_scaling: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: One per attribute: "present" means probability >= threshold.
    thresholds: tuple[float, ...] = ()
    threshold_method: str = "default (not calibrated)"
    #: Whether each attribute's threshold was calibrated (False: DEFAULT_THRESHOLD or export's default).
    calibrated: tuple[bool, ...] = ()
    #: Where the training faces had their five landmarks (x, y) in the aligned frame; None: CelebA's mean.
    face_template: tuple[tuple[float, float], ...] | None = None
    face_template_source: str | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    #: The version of the image rule (faceattr/preprocess.py) the model was trained with.
    preprocess_rule: int = RULE_VERSION
    #: One per attribute: the artefacts output sigmoid(logit / temperature) (1.0 = not temperature-scaled).
    temperatures: tuple[float, ...] = ()
    #: How the training images were aligned (:data:`FACE_ALIGNMENTS`); "detect" makes face=detect the service's
    #: default for this model.
    face_alignment: str = "celeba"
    #: The int8 ONNX artefact's measured cost (None: the model has no int8 artefact).
    int8: Int8Figures | None = None
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self) -> None:
        count = len(self.attributes)
        if count == 0:
            raise ContractError("a model needs at least one attribute")
        if len(set(self.attributes)) != count:
            raise ContractError(f"attribute names repeat: {list(self.attributes)}")
        if not self.thresholds:
            object.__setattr__(self, "thresholds", (DEFAULT_THRESHOLD,) * count)
        if not self.calibrated:
            object.__setattr__(self, "calibrated", (False,) * count)
        if not self.temperatures:
            object.__setattr__(self, "temperatures", (1.0,) * count)
        if len(self.temperatures) != count or min(self.temperatures) <= 0:
            raise ContractError(f"temperatures need one positive value per attribute, not {list(self.temperatures)}")
        if self.face_alignment not in FACE_ALIGNMENTS:
            raise ContractError(f"face_alignment {self.face_alignment!r}: expected one of {', '.join(FACE_ALIGNMENTS)}")
        if len(self.thresholds) != count or len(self.calibrated) != count:
            raise ContractError(
                f"{len(self.thresholds)} thresholds / {len(self.calibrated)} calibration flags for {count} attributes"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ContractError(f"mean and std need 3 channels (std > 0), not {list(self.mean)} / {list(self.std)}")
        if self.int8 is not None and len(self.int8.acc_change) != count:
            raise ContractError(f"int8 accuracy changes for {len(self.int8.acc_change)} of {count} attributes")
        if self.face_template is not None and len(self.face_template) != 5:
            raise ContractError(f"face_template needs 5 landmarks, not {len(self.face_template)}")

    # --- building ---------------------------------------------------------------------------------------------------

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> ModelContract:
        """The contract of a FaceAttrModule's hyper-parameters (uncalibrated thresholds, CelebA's face template), with
        the image rule the model was trained on."""
        crop = hparams.get("crop")
        return cls(
            backbone=str(hparams["backbone"]),
            attributes=tuple(str(a) for a in hparams["attributes"]),
            image_size=_pair(hparams["image_size"], "image_size"),
            crop=None if crop is None else _pair(crop, "crop"),
            jpeg_scaling=bool(hparams.get("jpeg_scaling", False)),
            mean=tuple(float(v) for v in hparams["mean"]),
            std=tuple(float(v) for v in hparams["std"]),
            preprocess_rule=int(hparams["preprocess_rule"]),
            face_alignment=str(hparams.get("face_alignment") or "celeba"),
        )

    def with_thresholds(self, thresholds: Sequence[float], calibrated: Sequence[bool], method: str) -> ModelContract:
        """This contract with per-attribute decision thresholds (in attribute order) and how they were set."""
        return replace(
            self,
            thresholds=tuple(round(float(t), 6) for t in thresholds),
            calibrated=tuple(bool(c) for c in calibrated),
            threshold_method=str(method),
        )

    def with_face_template(self, points: Sequence[Sequence[float]], source: str) -> ModelContract:
        """This contract with the five-landmark face template (aligned-frame pixels) and where it came from."""
        template = tuple((round(float(x), 4), round(float(y), 4)) for x, y in points)
        return replace(self, face_template=template, face_template_source=str(source))

    def with_temperatures(self, temperatures: Sequence[float]) -> ModelContract:
        """This contract with one temperature per attribute (in attribute order), applied inside the artefacts."""
        return replace(self, temperatures=tuple(round(float(t), 6) for t in temperatures))

    def with_int8(self, figures: Int8Figures) -> ModelContract:
        """This contract with its int8 artefact's measured cost."""
        return replace(self, int8=figures)

    # --- reading ----------------------------------------------------------------------------------------------------

    @property
    def default_face_mode(self) -> str:
        """The service's ``face`` default for this model: ``detect`` when its training images were aligned by the
        detector, else ``center`` (CelebA-aligned training images: uploads are framed the same way)."""
        return "detect" if self.face_alignment == "detect" else "center"

    @property
    def temperature_scaled(self) -> bool:
        return any(t != 1.0 for t in self.temperatures)

    @property
    def uncalibrated_attributes(self) -> tuple[str, ...]:
        return tuple(name for name, ok in zip(self.attributes, self.calibrated) if not ok)

    def threshold_of(self) -> dict[str, float]:
        """``{attribute: threshold}`` in attribute order."""
        return dict(zip(self.attributes, self.thresholds))

    # --- JSON -------------------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The contract as written into ``faceattr.json`` (:data:`CONTRACT_KEY`): plain JSON values, thresholds by
        attribute name."""
        return {
            "format_version": self.format_version,
            "backbone": self.backbone,
            "attributes": list(self.attributes),
            "image_size": list(self.image_size),
            "crop": None if self.crop is None else list(self.crop),
            "jpeg_scaling": self.jpeg_scaling,
            "mean": list(self.mean),
            "std": list(self.std),
            "thresholds": self.threshold_of(),
            "threshold_method": self.threshold_method,
            "uncalibrated_attributes": list(self.uncalibrated_attributes),
            "face_template": None
            if self.face_template is None
            else {"points": [list(p) for p in self.face_template], "source": self.face_template_source},
            "input_name": self.input_name,
            "output_name": self.output_name,
            "preprocess_rule": self.preprocess_rule,
            "temperatures": dict(zip(self.attributes, self.temperatures)),
            "face_alignment": self.face_alignment,
            "int8": None if self.int8 is None else self.int8.to_json(self.attributes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelContract:
        """The contract :meth:`to_json` wrote; ContractError (one line) for another version or a bad field."""
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ContractError(
                f"its contract has format_version {version!r}, this faceattr reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        rule = data.get("preprocess_rule")
        if rule != RULE_VERSION:
            raise ContractError(
                f"it was trained on version {rule!r} of the image rule (faceattr/preprocess.py); this faceattr "
                f"preprocesses by version {RULE_VERSION}, which would feed it other pixels"
            )
        try:
            attributes = tuple(str(a) for a in data["attributes"])
            thresholds = data.get("thresholds") or {}
            temperatures = data.get("temperatures") or {}
            for what, values in (("thresholds", thresholds), ("temperatures", temperatures)):
                unknown = sorted(set(values) - set(attributes))
                if unknown:
                    raise ContractError(f"{what} for attributes the model does not have: {', '.join(unknown[:5])}")
            uncalibrated = set(data.get("uncalibrated_attributes") or attributes)
            template = data.get("face_template") or None
            crop = data.get("crop")
            int8 = data.get("int8")
            return cls(
                backbone=str(data["backbone"]),
                attributes=attributes,
                image_size=_pair(data["image_size"], "image_size"),
                crop=None if crop is None else _pair(crop, "crop"),
                jpeg_scaling=bool(data["jpeg_scaling"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                thresholds=tuple(float(thresholds.get(name, DEFAULT_THRESHOLD)) for name in attributes),
                threshold_method=str(data.get("threshold_method", "default (not calibrated)")),
                calibrated=tuple(name not in uncalibrated for name in attributes),
                face_template=None if template is None else tuple((float(x), float(y)) for x, y in template["points"]),
                face_template_source=None if template is None else template.get("source"),
                input_name=str(data.get("input_name", INPUT_NAME)),
                output_name=str(data.get("output_name", OUTPUT_NAME)),
                preprocess_rule=rule,
                temperatures=tuple(float(temperatures.get(name, 1.0)) for name in attributes),
                face_alignment=str(data.get("face_alignment", "celeba")),
                int8=None if int8 is None else Int8Figures.from_json(int8, attributes),
            )
        except ContractError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise ContractError(f"its contract is malformed ({what})") from None


def read_contract(metadata: Mapping[str, Any], what: str) -> ModelContract:
    """The contract in an export's metadata (``faceattr.json``, or the BentoML model's metadata), or a one-line
    ContractError naming ``what`` (the model's tag or folder) and saying to export it again."""
    again = "export it again with this faceattr: python export.py ckpt=<its run dir>"
    raw = metadata.get(CONTRACT_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(raw, Mapping):
        raise ContractError(
            f"{what} was exported by an older faceattr (its faceattr.json has no versioned model contract); {again}"
        )
    try:
        return ModelContract.from_json(raw)
    except ContractError as exc:
        raise ContractError(f"{what}: {exc}; {again}") from None
