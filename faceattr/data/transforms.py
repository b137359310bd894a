"""Training images: the file read by the project's one image rule (:mod:`faceattr.preprocess`), then augmented.

:class:`ImageLoader` turns a file into the model's uint8 input in one step (decode, with JPEGs at the reduced DCT
scale the rule picks for the model's ``jpeg_scaling``; the crop of the aligned frame; the resize): the function the
service and export run on an image, so training, evaluation and serving see the same pixels. Augmentation
(``data.train_augment``, torchvision ``transforms.v2``) runs after it, on the uint8 image; the model converts to
float, scales to [0, 1] and normalizes on the device (see ``FaceAttrModule._unpack``). The data path stays uint8 end
to end (4x less memory and host-to-device traffic than float).

With ``align="detect"`` (``data.align``) the loader first finds the photo's largest face and aligns it onto CelebA's
178x218 frame as the service's ``face=detect`` does (:class:`faceattr.data.face_align.FaceAligner`), then applies
the same crop and resize: the model input the service computes for that photo. That path raises
:class:`~faceattr.data.face_align.NoFaceError` for a photo without a face; the pre-decoded cache, which align=detect
needs, lists and leaves out those photos.

A plain image tensor (what ``CelebAImages`` passes) goes straight to torchvision's flip kernel, the one v2's dispatch
would pick: the output is identical, without v2's per-call input inspection. Any other input (tv_tensors, several
inputs) takes v2's normal path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from faceattr.data.face_align import ALIGN_MODES, DetectorSettings, FaceAligner
from faceattr.preprocess import RULE_VERSION, decode_file, preprocess, size_pair


class ImageLoader:
    """``path -> uint8 (3, h, w)`` at ``image_size``: the training ``crop`` of the aligned frame (None: the whole
    frame), from a JPEG decoded as :func:`faceattr.preprocess.decode_scale` says for ``jpeg_scaling``; with
    ``align="detect"``, of the photo's largest face aligned onto that frame (``detector``: the
    :class:`~faceattr.data.face_align.DetectorSettings`, a mapping or None for the service's defaults; the face is
    aligned from the full-size photo, so ``jpeg_scaling`` does not apply).

    Raises ``ValueError`` or ``OSError`` for a file that is not a readable image (``CelebAImages`` names it), and
    :class:`~faceattr.data.face_align.NoFaceError` for a photo without a face (align=detect).
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        crop: int | Sequence[int] | None,
        jpeg_scaling: bool = False,
        align: str = "none",
        detector: DetectorSettings | Mapping[str, Any] | None = None,
    ) -> None:
        if align not in ALIGN_MODES:
            raise ValueError(f"align={align!r}: expected {' or '.join(ALIGN_MODES)}")
        self.image_size = size_pair(image_size)
        self.crop = None if crop is None else size_pair(crop)
        self.jpeg_scaling = bool(jpeg_scaling)
        self.align = align
        self.aligner = FaceAligner(DetectorSettings.of(detector)) if align == "detect" else None

    def __call__(self, path: str) -> torch.Tensor:
        with open(path, "rb") as file:  # (pathlib's parsing costs ~15 us an image here)
            data = file.read()
        if self.aligner is not None:
            decoded = self.aligner(data)
        else:
            decoded = decode_file(data, self.image_size, self.crop, self.jpeg_scaling)
        return torch.from_numpy(preprocess(decoded, self.image_size, self.crop)).permute(2, 0, 1)

    def __repr__(self) -> str:
        crop = None if self.crop is None else list(self.crop)
        aligned = "" if self.aligner is None else f", align=detect by {self.aligner!r}"
        return (
            f"ImageLoader(image_size={list(self.image_size)}, crop={crop}, jpeg_scaling={self.jpeg_scaling}, "
            f"rule=faceattr.preprocess v{RULE_VERSION}{aligned})"
        )


def _plain_image(inputs: tuple[Any, ...]) -> torch.Tensor | None:
    """The single plain tensor of ``inputs`` (v2 treats it as an image), else None."""
    return inputs[0] if len(inputs) == 1 and type(inputs[0]) is torch.Tensor else None


class RandomHorizontalFlip(v2.RandomHorizontalFlip):
    """``v2.RandomHorizontalFlip`` (same probability draw, same kernel) with a direct path for a plain tensor.

    v2 decides with ``torch.rand(1) >= p``, a float32 comparison; the direct path compares the drawn number with
    ``p`` rounded to float32 as Python floats (the same decisions, without a tensor comparison: ~4 us less a call).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p)
        self._threshold = float(torch.tensor(p, dtype=torch.float32))

    def forward(self, *inputs: Any) -> Any:
        image = _plain_image(inputs)
        if image is None:
            return super().forward(*inputs)
        if torch.rand(1).item() >= self._threshold:
            return image
        return F.horizontal_flip_image(image)


def _direct(transform: v2.Transform) -> v2.Transform:
    """torchvision's horizontal flip as the equivalent direct-path one; any other transform as it is."""
    if type(transform) is v2.RandomHorizontalFlip:
        return RandomHorizontalFlip(p=transform.p)
    return transform


def build_augmentation(augment: Sequence[v2.Transform]) -> v2.Compose | None:
    """The augmentation ``augment`` (run after :class:`ImageLoader`, per item and epoch, also on images read from
    the pre-decoded cache ``faceattr.data.cache``), None when there are none."""
    return v2.Compose([_direct(t) for t in augment]) if augment else None
