"""Drawing basics shared by the renderer's parts: the canvas, the face geometry, colour helpers and masks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from faceattr.data.synthetic.attribute_model import RGB

WIDTH, HEIGHT = 178, 218


@dataclass(frozen=True)
class Geometry:
    """Face layout in image pixels: centre, half-width/height and the rows of the features."""

    cx: float
    cy: float
    fw: float
    fh: float
    jaw: float  # superellipse exponent of the lower face: 2 = round, >2 = square (male), <2 = tapered (oval)
    eye_dx: float
    eye_y: float
    brow_y: float
    nose_y: float
    mouth_y: float
    mouth_w: float

    @property
    def chin_y(self) -> float:
        return self.cy + self.fh


def shade(rgb: RGB, factor: float, alpha: int | None = None) -> tuple[int, ...]:
    shaded = tuple(int(min(255, c * factor)) for c in rgb)
    return shaded if alpha is None else (*shaded, alpha)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def random_color(rng: np.random.Generator) -> RGB:
    return tuple(int(v) for v in rng.integers(20, 235, 3))


def beard_color(hair: RGB) -> RGB:
    return shade(hair, 0.55 if sum(hair) > 400 else 0.85)  # light hair gives a darker beard


def face_geometry(a: dict[str, bool], rng: np.random.Generator) -> Geometry:
    scale = rng.uniform(0.94, 1.06)
    base_w = 36.0 * scale * (1.06 if a["Male"] else 1.0)
    fw = base_w * (1.2 if a["Chubby"] else 1.0) * (0.92 if a["Oval_Face"] else 1.0)
    fh = 46.0 * scale * (1.1 if a["Oval_Face"] else 1.0) * (1.02 if a["Male"] else 1.0)
    jaw = 1.6 if a["Oval_Face"] else 3.4 if a["Male"] else 2.3 if a["Chubby"] else 2.1
    cx, cy = 89.0 + rng.uniform(-4, 4), 104.0 + rng.uniform(-4, 4)
    eye_y = cy - 0.05 * fh
    return Geometry(
        cx=cx,
        cy=cy,
        fw=fw,
        fh=fh,
        jaw=jaw,
        eye_dx=0.44 * base_w,
        eye_y=eye_y,
        brow_y=eye_y - 0.25 * fh,
        nose_y=cy + 0.33 * fh,
        mouth_y=cy + 0.6 * fh,
        mouth_w=0.3 * base_w,
    )


def face_outline(g: Geometry, points: int = 96) -> list[tuple[float, float]]:
    """Head contour: an ellipse on top, a superellipse with exponent ``g.jaw`` below the eyes."""
    theta = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    k = np.where(s > 0, g.jaw, 2.0)
    x = g.cx + g.fw * np.sign(c) * np.abs(c) ** (2 / k)
    y = g.cy + g.fh * np.sign(s) * np.abs(s) ** (2 / k)
    return list(zip(x.tolist(), y.tolist()))


def neck_half_width(g: Geometry, a: dict[str, bool]) -> float:
    return (0.4 if a["Chubby"] else 0.46) * g.fw


def chin_box(g: Geometry) -> tuple[float, float, float, float]:
    """Where a double chin goes: just below the jaw line."""
    return g.cx - 0.62 * g.fw, g.chin_y - 14, g.cx + 0.62 * g.fw, g.chin_y + 15


def lower_face_mask(g: Geometry, top: float) -> Image.Image:
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(face_outline(g), fill=255)
    draw.rectangle((0, 0, WIDTH, top), fill=0)
    return mask
