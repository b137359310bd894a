"""Hair (colour, texture, bangs, hairline, baldness) and what is worn on the head: hats, glasses, jewellery."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from faceattr.data.synthetic.attribute_model import RGB, bernoulli
from faceattr.data.synthetic.drawing import (
    HEIGHT,
    WIDTH,
    Geometry,
    chin_box,
    face_outline,
    neck_half_width,
    random_color,
    shade,
)


def _hairline(g: Geometry, a: dict[str, bool]) -> Callable[[float], float]:
    """Row of the hairline as a function of x (face pixels below it are skin)."""
    if a["Bangs"]:
        return lambda x: g.brow_y - 5
    if a["Receding_Hairline"]:
        return lambda x: g.cy - 0.82 * g.fh - 0.25 * g.fh * math.exp(-((((abs(x - g.cx) / g.fw) - 0.55) / 0.2) ** 2))
    return lambda x: g.cy - 0.62 * g.fh + 0.12 * g.fh * ((x - g.cx) / g.fw) ** 2


def _hair_mask(g: Geometry, a: dict[str, bool], long_hair: bool, volume: float) -> Image.Image:
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(mask)
    outline = face_outline(g)
    if a["Bald"]:
        for side in (-1, 1):  # the fringe left at the sides
            x = g.cx + side * (g.fw + 1)
            draw.ellipse((x - 5, g.eye_y - 0.35 * g.fh, x + 5, g.eye_y + 0.1 * g.fh), fill=255)
        draw.polygon(outline, fill=0)
        return mask
    width = g.fw + 6 + volume
    draw.ellipse((g.cx - width, g.cy - g.fh - 7 - volume, g.cx + width, g.cy + 0.3 * g.fh), fill=255)
    if long_hair:
        draw.rounded_rectangle(
            (g.cx - width - 2, g.cy - 0.3 * g.fh, g.cx + width + 2, g.chin_y + 30), radius=10, fill=255
        )
    hairline = _hairline(g, a)
    draw.polygon([(x, max(y, hairline(x))) for x, y in outline], fill=0)
    neck = neck_half_width(g, a)  # long hair falls behind the neck, not over it
    draw.rectangle((g.cx - neck, g.cy, g.cx + neck, HEIGHT), fill=0)
    if a["Double_Chin"]:
        draw.ellipse(chin_box(g), fill=0)
    return mask


def _hair_layer(g: Geometry, a: dict[str, bool], hair: RGB, rng: np.random.Generator) -> Image.Image:
    """Solid hair colour with strands: straight lines or sine waves (Wavy_Hair)."""
    layer = Image.new("RGB", (WIDTH, HEIGHT), hair)
    if not (a["Straight_Hair"] or a["Wavy_Hair"]):
        return layer
    draw = ImageDraw.Draw(layer)
    strand = shade(hair, 0.55) if sum(hair) > 150 else shade(hair, 2.4)
    ys = np.arange(g.cy - g.fh - 20, g.chin_y + 34, 3.0)
    phase = rng.uniform(0, 2 * math.pi)
    for x0 in np.arange(g.cx - g.fw - 22, g.cx + g.fw + 22, 6.0):
        if a["Wavy_Hair"]:
            xs = x0 + 4.0 * np.sin(2 * math.pi * ys / 16.0 + phase)
        else:
            xs = x0 + (x0 - g.cx) * (ys - ys[0]) / 400.0
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=strand, width=2)
    return layer


def draw_hair(image: Image.Image, g: Geometry, a: dict[str, bool], hair: RGB, rng: np.random.Generator) -> None:
    long_hair = bernoulli(rng, 0.08 if a["Male"] else 0.85)
    volume = 6.0 if a["Wavy_Hair"] else 1.0 if a["Straight_Hair"] else 3.0
    mask = _hair_mask(g, a, long_hair, volume)
    image.paste(_hair_layer(g, a, hair, rng), (0, 0), mask)
    if a["Bald"]:
        ImageDraw.Draw(image, "RGBA").ellipse(
            (g.cx - 0.4 * g.fw, g.cy - 0.95 * g.fh, g.cx + 0.1 * g.fw, g.cy - 0.7 * g.fh), fill=(255, 255, 255, 90)
        )


def draw_hat(draw: ImageDraw.ImageDraw, g: Geometry, rng: np.random.Generator) -> None:
    color = random_color(rng)
    bottom = g.cy - 0.55 * g.fh
    if rng.random() < 0.5:  # beanie
        draw.chord((g.cx - g.fw - 6, g.cy - g.fh - 24, g.cx + g.fw + 6, bottom + 30), 180, 360, fill=color)
        draw.rectangle((g.cx - g.fw - 7, bottom - 8, g.cx + g.fw + 7, bottom + 2), fill=shade(color, 0.75))
    else:  # brimmed hat
        draw.rounded_rectangle((g.cx - g.fw + 2, g.cy - g.fh - 26, g.cx + g.fw - 2, bottom), radius=8, fill=color)
        draw.rectangle((g.cx - g.fw + 2, bottom - 9, g.cx + g.fw - 2, bottom - 3), fill=shade(color, 0.6))
        draw.ellipse((g.cx - g.fw - 20, bottom - 7, g.cx + g.fw + 20, bottom + 5), fill=shade(color, 0.85))


def draw_glasses(draw: ImageDraw.ImageDraw, g: Geometry, rng: np.random.Generator) -> None:
    frame = ((20, 20, 20), (70, 40, 25), (30, 30, 90), (110, 20, 30))[int(rng.integers(4))]
    tinted = rng.random() < 0.25
    for side in (-1, 1):
        ex = g.cx + side * g.eye_dx
        draw.rounded_rectangle(
            (ex - 12, g.eye_y - 8, ex + 12, g.eye_y + 8),
            radius=4,
            fill=(20, 20, 30, 200) if tinted else (200, 220, 255, 40),
            outline=frame,
            width=3,
        )
        draw.line([(ex + side * 12, g.eye_y - 4), (g.cx + side * (g.fw + 2), g.eye_y - 2)], fill=frame, width=3)
    draw.line([(g.cx - g.eye_dx + 12, g.eye_y - 3), (g.cx + g.eye_dx - 12, g.eye_y - 3)], fill=frame, width=3)


def draw_jewellery(draw: ImageDraw.ImageDraw, g: Geometry, a: dict[str, bool], rng: np.random.Generator) -> None:
    metal = ((236, 196, 70), (220, 220, 230), (245, 240, 225))[int(rng.integers(3))]
    if a["Wearing_Earrings"]:
        hoop = rng.random() < 0.5
        for side in (-1, 1):
            x, y = g.cx + side * (g.fw + 1), g.nose_y + 0.12 * g.fh
            if hoop:
                draw.ellipse((x - 5, y, x + 5, y + 12), outline=metal, width=3)
            else:
                draw.ellipse((x - 3, y - 1, x + 3, y + 5), fill=metal)
                draw.ellipse((x - 4, y + 6, x + 4, y + 14), fill=metal)
    if a["Wearing_Necklace"]:
        t = np.linspace(-1.0, 1.0, 11)
        xs = g.cx + 0.55 * g.fw * t
        ys = g.chin_y + 14 + 10 * (1 - t**2)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=shade(metal, 0.8), width=2)
        for x, y in zip(xs.tolist(), ys.tolist()):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=metal)
