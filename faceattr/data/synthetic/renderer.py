"""Rendering: one face per :class:`FaceSpec`, every attribute with a visible cue inside the training crop.

PIL ImageDraw + numpy. Every attribute has a cue inside the central 178x178 square (rows 20..198), which is what
training crops: hair colour, texture (straight/wavy strands), bangs, hairline, baldness; eyebrow shape and
thickness; eye shape, bags, eye shadow; nose size and shape; lip size, colour, smile and opening; stubble, goatee,
mustache, sideburns; cheek shading and blush; face width (chubby), length (oval), jaw (male), double chin; skin
tone (pale); wrinkles (not young); glasses, hat, earrings, necklace, shirt and tie. Nuisances: face position and
scale jitter, background colours, lighting tilt and brightness, sensor noise (JPEG quality is the file writer's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from faceattr.data.synthetic.attribute_model import FaceSpec
from faceattr.data.synthetic.drawing import HEIGHT, WIDTH, face_geometry
from faceattr.data.synthetic.face_parts import (
    draw_brows,
    draw_cheeks,
    draw_ears,
    draw_eyes,
    draw_facial_hair,
    draw_head,
    draw_mouth,
    draw_mustache,
    draw_nose,
    draw_torso,
    draw_wrinkles,
)
from faceattr.data.synthetic.hair_and_accessories import draw_glasses, draw_hair, draw_hat, draw_jewellery


@dataclass(frozen=True)
class RenderedFace:
    """A drawn face and where it is: the values of its bounding-box and landmark annotation rows."""

    image: Image.Image
    bbox: tuple[int, int, int, int]  # x_1, y_1, width, height
    landmarks: tuple[int, ...]  # eyes, nose, mouth corners: x, y each (list_landmarks_align_celeba.txt's columns)


def _background(rng: np.random.Generator) -> Image.Image:
    """Smooth random colour field around a base colour (a tiny image upsampled) with a few soft shapes."""
    base = rng.integers(50, 210, 3)
    grid = np.clip(base + rng.integers(-45, 46, (3, 3, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(grid, "RGB").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        w, h = rng.uniform(15, 70), rng.uniform(15, 70)
        fill = (*(int(v) for v in rng.integers(0, 256, 3)), 90)
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + w, y + h), fill=fill)
        else:
            draw.ellipse((x, y, x + w, y + h), fill=fill)
    return image


def _finish(image: Image.Image, blurry: bool, rng: np.random.Generator) -> Image.Image:
    """Camera effects: optional Gaussian blur, lighting tilt and brightness, colour cast, sensor noise."""
    if blurry:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2.5, 3.5)))
    pixels = np.asarray(image, dtype=np.float32)
    tilt = 1.0 + rng.uniform(-0.2, 0.2) * np.linspace(-0.5, 0.5, WIDTH, dtype=np.float32)
    gain = rng.uniform(0.9, 1.08) * tilt[None, :, None] * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * 3.0
    return Image.fromarray(np.clip(pixels * gain + noise, 0, 255).astype(np.uint8), "RGB")


def render_face(spec: FaceSpec, rng: np.random.Generator) -> RenderedFace:
    """Draw ``spec`` on a 178x218 canvas; nuisances (position, background, lighting...) come from ``rng``."""
    a = spec.attributes
    g = face_geometry(a, rng)
    image = _background(rng)
    draw = ImageDraw.Draw(image, "RGBA")
    draw_torso(draw, g, a, spec.skin, rng)
    draw_ears(draw, g, spec.skin)
    draw_head(draw, g, a, spec.skin)
    draw_cheeks(draw, g, a, spec.skin)
    if not a["Young"]:
        draw_wrinkles(draw, g, spec.skin)
    draw_facial_hair(image, g, spec, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    draw_nose(draw, g, a, spec.skin)
    draw_eyes(draw, g, spec, rng)
    draw_brows(draw, g, a, spec.hair)
    left_corner, right_corner = draw_mouth(draw, g, spec, rng)
    if a["Mustache"]:
        draw_mustache(draw, g, spec.hair)
    draw_hair(image, g, a, spec.hair, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    if a["Wearing_Hat"]:
        draw_hat(draw, g, rng)
    if a["Eyeglasses"]:
        draw_glasses(draw, g, rng)
    draw_jewellery(draw, g, a, rng)
    image = _finish(image, a["Blurry"], rng)
    top = g.cy - g.fh - 7
    bbox = (round(g.cx - g.fw - 6), round(top), round(2 * g.fw + 12), round(g.chin_y - top))
    points = [(g.cx - g.eye_dx, g.eye_y), (g.cx + g.eye_dx, g.eye_y), (g.cx, g.nose_y), left_corner, right_corner]
    return RenderedFace(image, bbox, tuple(round(v) for point in points for v in point))
