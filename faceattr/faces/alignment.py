"""Similarity transforms between landmark sets, and warping a photo by one (CelebA's alignment).

Points are pixel indices (the centre of the top-left pixel is (0, 0)); a transform is a 2x3 matrix ``m`` mapping a
photo point ``p`` to ``m[:, :2] @ p + m[:, 2]``. :func:`warp` samples the photo bilinearly; when the transform
shrinks the photo by 2x or more, the photo region it reads is first reduced by an integer factor with a box filter
(Pillow's ``reduce``), so the result is not aliased; beyond the photo's edges the edge pixels are repeated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from faceattr.faces.template import CELEBA_TEMPLATE, Template, template_points
from faceattr.preprocess import ALIGNED_SIZE

#: A face frame may reach outside the photo (a face at its edge) by at most this many times the photo's area.
MAX_REGION_RATIO = 25


def similarity_transform(src: Sequence[Sequence[float]], dst: Sequence[Sequence[float]]) -> np.ndarray:
    """The rotation + uniform scale + shift that maps the points ``src`` onto ``dst`` best in the least-squares
    sense (Umeyama 1991; no reflection), as a 2x3 matrix. ValueError for fewer than 2 points or coincident ones."""
    src_a, dst_a = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src_a.ndim != 2 or src_a.shape[1] != 2 or src_a.shape != dst_a.shape or len(src_a) < 2:
        raise ValueError(f"expected two equal lists of at least 2 (x, y) points, got {src_a.shape} and {dst_a.shape}")
    if not (np.isfinite(src_a).all() and np.isfinite(dst_a).all()):
        raise ValueError("landmarks must be finite numbers")
    src_mean, dst_mean = src_a.mean(axis=0), dst_a.mean(axis=0)
    src_c, dst_c = src_a - src_mean, dst_a - dst_mean
    src_var = float((src_c**2).sum()) / len(src_a)
    if src_var <= 1e-12:
        raise ValueError("the source points coincide: no similarity transform")
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src_a))
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ np.diag(d) @ vt
    scale = float((s * d).sum()) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def apply_transform(matrix: np.ndarray, points: Sequence[Sequence[float]]) -> np.ndarray:
    """``points`` (N, 2) mapped by the 2x3 ``matrix``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 inverse of an invertible 2x3 affine ``matrix``."""
    linear = np.linalg.inv(np.asarray(matrix, dtype=np.float64)[:, :2])
    return np.concatenate([linear, -(linear @ np.asarray(matrix)[:, 2])[:, None]], axis=1)


def _source_patch(image: Image.Image, matrix: np.ndarray, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """The part of ``image`` that ``matrix`` maps into an output of ``size`` (width, height), reduced by an integer
    factor when the transform shrinks by 2x or more, edge-padded where it leaves the photo; and the transform from
    that patch's pixels to the output's."""
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    factor = max(1, int(1.0 / scale)) if scale < 0.5 else 1
    out_w, out_h = size
    corners = np.array([[-0.5, -0.5], [out_w - 0.5, -0.5], [-0.5, out_h - 0.5], [out_w - 0.5, out_h - 0.5]])
    spots = apply_transform(invert_transform(matrix), corners)
    margin = 2 * factor  # room for the bilinear kernel around the region
    x0, y0 = math.floor(spots[:, 0].min()) - margin, math.floor(spots[:, 1].min()) - margin
    cols = -(-(math.ceil(spots[:, 0].max()) + margin - x0) // factor)  # the patch's size, in reduced pixels
    rows = -(-(math.ceil(spots[:, 1].max()) + margin - y0) // factor)
    x1, y1 = x0 + cols * factor, y0 + rows * factor
    width, height = image.size
    # The whole blocks of the patch that lie inside the photo: [first, last) in patch pixels, per axis.
    first_c, last_c = max(0, -(x0 // factor)), min(cols, (width - x0) // factor)
    first_r, last_r = max(0, -(y0 // factor)), min(rows, (height - y0) // factor)
    if first_c < last_c and first_r < last_r:
        box = (x0 + first_c * factor, y0 + first_r * factor, x0 + last_c * factor, y0 + last_r * factor)
        patch = image.reduce(factor, box=box) if factor > 1 else image.crop(box)
        pad = ((first_r, rows - last_r), (first_c, cols - last_c))
        if any(pad[0]) or any(pad[1]):  # partly outside the photo: repeat its edge pixels
            patch = Image.fromarray(np.pad(np.asarray(patch), (*pad, (0, 0)), mode="edge"))
    else:  # no whole block inside (a photo smaller than the reduction, or absurd landmarks): clip indices
        if (x1 - x0) * (y1 - y0) > MAX_REGION_RATIO * width * height + 4 * out_w * out_h:
            raise ValueError("the landmarks put the face frame far outside the photo")
        xs = np.clip(np.arange(x0, x1), 0, width - 1)
        ys = np.clip(np.arange(y0, y1), 0, height - 1)
        patch = Image.fromarray(np.ascontiguousarray(np.asarray(image)[np.ix_(ys, xs)]))
        if factor > 1:
            patch = patch.reduce(factor)
    # A patch pixel u covers photo pixels [x0 + u*factor, x0 + (u+1)*factor): its centre is the photo index
    # x0 + u*factor + (factor - 1) / 2.
    to_photo_shift = np.array([x0 + (factor - 1) / 2, y0 + (factor - 1) / 2])
    patch_matrix = np.concatenate(
        [matrix[:, :2] * factor, (matrix[:, :2] @ to_photo_shift + matrix[:, 2])[:, None]], axis=1
    )
    return patch, patch_matrix


def warp(image: Image.Image, matrix: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The image of ``size`` (width, height) whose pixel ``q`` shows the photo at ``matrix``'s inverse of ``q``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
        raise ValueError(f"expected an invertible 2x3 affine transform, got {matrix!r}")
    patch, to_output = _source_patch(image, matrix, size)
    # Pillow maps output to input in continuous coordinates (pixel centres at +0.5).
    inverse = invert_transform(to_output)
    shift = inverse[:, 2] + 0.5 - inverse[:, :2] @ np.array([0.5, 0.5])
    coefficients = (inverse[0, 0], inverse[0, 1], shift[0], inverse[1, 0], inverse[1, 1], shift[1])
    return patch.transform(size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)


def align_face(
    image: Image.Image,
    landmarks: Sequence[Sequence[float]],
    template: Template | Sequence[Sequence[float]] = CELEBA_TEMPLATE,
) -> Image.Image:
    """The face whose five ``landmarks`` (photo pixels, CelebA's order) are given, as a CelebA aligned image:
    178 wide x 218 high, the landmarks mapped onto ``template`` by :func:`similarity_transform`."""
    matrix = similarity_transform(landmarks, template_points(template))
    height, width = ALIGNED_SIZE
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return warp(rgb, matrix, (width, height))
