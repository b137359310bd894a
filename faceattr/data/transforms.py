"""Image preprocessing on uint8 tensors with torchvision ``transforms.v2``.

The data path stays uint8 end to end (4x less memory and host-to-device traffic than float); the model converts to
float, scales to [0, 1] and normalizes on the device (see ``FaceAttrModule._unpack``).

The crop and resize run as one transform, and a plain image tensor (what ``CelebAImages`` passes) goes straight to
torchvision's kernels (``center_crop_image``, ``resize_image``, ``horizontal_flip_image``), the ones that v2's
dispatch would pick: the output is identical, without v2's per-call input inspection (about a fifth of the
per-image time in a DataLoader worker). Any other input (tv_tensors, several inputs) takes v2's normal path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``64`` -> ``(64, 64)``; ``[h, w]`` -> ``(h, w)``."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"a size must be a positive int or [height, width], got {size!r}")


def _plain_image(inputs: tuple[Any, ...]) -> torch.Tensor | None:
    """The single plain tensor of ``inputs`` (v2 treats it as an image), else None."""
    return inputs[0] if len(inputs) == 1 and type(inputs[0]) is torch.Tensor else None


class CenterCropResize(v2.Transform):
    """``CenterCrop(crop)`` (None: no crop) then ``Resize(size, antialias=True)`` (bilinear), as one transform."""

    def __init__(self, crop: Sequence[int] | None, size: Sequence[int]) -> None:
        super().__init__()
        self.crop = None if crop is None else list(size_pair(crop))
        self.size = list(size_pair(size))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.crop is not None:
            inpt = self._call_kernel(F.center_crop, inpt, output_size=self.crop)
        return self._call_kernel(F.resize, inpt, self.size, antialias=True)

    def forward(self, *inputs: Any) -> Any:
        image = _plain_image(inputs)
        if image is None:
            return super().forward(*inputs)
        if self.crop is not None:
            image = F.center_crop_image(image, self.crop)
        return F.resize_image(image, self.size, antialias=True)

    def extra_repr(self) -> str:
        return f"crop={self.crop}, size={self.size}, antialias=True"


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


def build_transform(
    image_size: int | Sequence[int],
    crop: int | Sequence[int] | None,
    augment: Sequence[v2.Transform] = (),
) -> v2.Compose:
    """Centre-crop the aligned face (``crop``, before resizing), resize to ``image_size``, then ``augment``."""
    steps: list[v2.Transform] = [CenterCropResize(None if crop is None else size_pair(crop), size_pair(image_size))]
    steps.extend(_direct(t) for t in augment)
    return v2.Compose(steps)


def build_augmentation(augment: Sequence[v2.Transform]) -> v2.Compose | None:
    """``augment`` alone (the steps :func:`build_transform` runs after resizing), None when there are none: what
    images read from the pre-decoded cache (``faceattr.data.cache``) still go through, per epoch."""
    return v2.Compose([_direct(t) for t in augment]) if augment else None
