"""The face and body: torso and clothes, ears, head, cheeks, wrinkles, facial hair, nose, eyes, brows, mouth."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from faceattr.data.synthetic.attribute_model import RGB, FaceSpec, jitter
from faceattr.data.synthetic.drawing import (
    HEIGHT,
    Geometry,
    beard_color,
    chin_box,
    face_outline,
    lower_face_mask,
    mix,
    neck_half_width,
    random_color,
    shade,
)


def draw_torso(draw: ImageDraw.ImageDraw, g: Geometry, a: dict[str, bool], skin: RGB, rng: np.random.Generator) -> None:
    cx, chin = g.cx, g.chin_y
    neck_w = neck_half_width(g, a)
    draw.rectangle((cx - neck_w, g.cy + 0.3 * g.fh, cx + neck_w, HEIGHT), fill=shade(skin, 0.9))
    draw.ellipse((cx - neck_w, chin - 10, cx + neck_w, chin + 8), fill=shade(skin, 0.78))  # shadow under the chin
    shoulder_w = (2.4 if a["Male"] else 2.0) * g.eye_dx * 2.3
    top = chin + 20
    if a["Wearing_Necktie"]:
        jacket = jitter(rng, ((30, 34, 60), (35, 35, 38), (80, 80, 86), (70, 50, 36))[int(rng.integers(4))], 8)
        draw.ellipse((cx - shoulder_w, top, cx + shoulder_w, top + 150), fill=jacket)
        draw.polygon(
            [(cx - 0.55 * g.fw, top - 4), (cx + 0.55 * g.fw, top - 4), (cx + 6, HEIGHT), (cx - 6, HEIGHT)],
            fill=jitter(rng, (236, 238, 242), 8),
        )  # shirt
        tie = jitter(
            rng, ((190, 30, 40), (40, 60, 170), (40, 120, 60), (130, 40, 130), (200, 150, 30))[int(rng.integers(5))], 15
        )
        knot_y = top - 2
        draw.polygon([(cx - 5, knot_y), (cx + 5, knot_y), (cx + 3.5, knot_y + 7), (cx - 3.5, knot_y + 7)], fill=tie)
        draw.polygon([(cx - 3.5, knot_y + 7), (cx + 3.5, knot_y + 7), (cx + 8, HEIGHT), (cx - 8, HEIGHT)], fill=tie)
        for side in (-1, 1):  # collar wings
            draw.polygon(
                [(cx + side * 5, knot_y), (cx + side * 0.6 * g.fw, top - 6), (cx + side * 14, knot_y + 12)],
                fill=(250, 250, 250),
            )
        return
    draw.ellipse((cx - shoulder_w, top, cx + shoulder_w, top + 150), fill=random_color(rng))
    neckline = 0.75 * g.fw if not a["Male"] else 0.5 * g.fw
    depth = rng.uniform(14, 24) if not a["Male"] else rng.uniform(4, 10)
    draw.chord((cx - neckline, top - depth, cx + neckline, top + depth), 0, 180, fill=shade(skin, 0.9))


def draw_ears(draw: ImageDraw.ImageDraw, g: Geometry, skin: RGB) -> None:
    top, bottom = g.eye_y - 0.14 * g.fh, g.nose_y + 0.1 * g.fh
    for side in (-1, 1):
        x = g.cx + side * g.fw
        draw.ellipse((x - 6, top, x + 6, bottom), fill=shade(skin, 0.95))
        draw.ellipse((x - 3, top + 4, x + 3, bottom - 6), fill=shade(skin, 0.8))


def draw_head(draw: ImageDraw.ImageDraw, g: Geometry, a: dict[str, bool], skin: RGB) -> None:
    if a["Double_Chin"]:  # a second, lower chin below the jaw line
        draw.ellipse(chin_box(g), fill=shade(skin, 0.95), outline=shade(skin, 0.55), width=3)
    draw.polygon(face_outline(g), fill=skin)
    if a["Double_Chin"]:
        draw.arc(
            (g.cx - 0.45 * g.fw, g.chin_y - 16, g.cx + 0.45 * g.fw, g.chin_y - 1),
            25,
            155,
            fill=shade(skin, 0.6),
            width=3,
        )


def draw_cheeks(draw: ImageDraw.ImageDraw, g: Geometry, a: dict[str, bool], skin: RGB) -> None:
    for side in (-1, 1):
        if a["High_Cheekbones"]:
            start = (g.cx + side * 0.9 * g.fw, g.eye_y + 0.16 * g.fh)
            end = (g.cx + side * 0.42 * g.fw, g.nose_y + 0.12 * g.fh)
            draw.line([start, end], fill=shade(skin, 0.7, 170), width=5)
            hx, hy = g.cx + side * 0.58 * g.fw, g.eye_y + 0.2 * g.fh
            draw.ellipse((hx - 7, hy - 4, hx + 7, hy + 4), fill=(255, 255, 255, 80))
        if a["Rosy_Cheeks"]:
            rx, ry = g.cx + side * 0.55 * g.fw, g.nose_y - 0.02 * g.fh
            draw.ellipse((rx - 11, ry - 8, rx + 11, ry + 8), fill=(240, 70, 100, 170))


def draw_wrinkles(draw: ImageDraw.ImageDraw, g: Geometry, skin: RGB) -> None:
    line = shade(skin, 0.6)
    for i in range(3):  # forehead
        y = g.brow_y - 7 - 5 * i
        draw.arc((g.cx - 0.45 * g.fw, y, g.cx + 0.45 * g.fw, y + 8), 200, 340, fill=line, width=2)
    for side in (-1, 1):
        ex = g.cx + side * (g.eye_dx + 10)
        for dy in (-4, 0, 4):  # crow's feet
            draw.line([(ex, g.eye_y + dy / 2), (ex + side * 7, g.eye_y + dy)], fill=line, width=2)
        nx, mx = g.cx + side * 8, g.cx + side * (g.mouth_w + 5)  # nasolabial fold
        draw.line([(nx, g.nose_y - 3), (nx + side * 6, g.nose_y + 5), (mx, g.mouth_y + 5)], fill=line, width=2)


def _stipple(
    image: Image.Image, mask: Image.Image, color: RGB, density: float, strength: float, rng: np.random.Generator
) -> None:
    """Paint random dots of ``color`` inside ``mask`` (stubble / beard texture)."""
    box = mask.getbbox()
    if box is None:
        return
    region = np.asarray(mask.crop(box), dtype=np.float32)
    dots = rng.random(region.shape, dtype=np.float32) < density
    alpha = np.where(dots, region * strength, 0).astype(np.uint8)
    image.paste(color, box, Image.fromarray(alpha, "L"))


def draw_facial_hair(image: Image.Image, g: Geometry, spec: FaceSpec, rng: np.random.Generator) -> None:
    a = spec.attributes
    beard = beard_color(spec.hair)
    if a["5_o_Clock_Shadow"]:
        _stipple(image, lower_face_mask(g, g.nose_y + 0.08 * g.fh), (45, 42, 48), 0.5, 0.75, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    if spec.full_beard:
        mask = lower_face_mask(g, g.nose_y + 0.02 * g.fh)
        ImageDraw.Draw(mask).ellipse((g.cx - 0.6 * g.fw, g.chin_y - 12, g.cx + 0.6 * g.fw, g.chin_y + 8), fill=255)
        image.paste(beard, (0, 0), mask)
        _stipple(image, mask, shade(beard, 0.6), 0.4, 1.0, rng)
    if a["Goatee"]:
        top = g.mouth_y + 0.08 * g.fh
        draw.ellipse((g.cx - 0.32 * g.fw, top, g.cx + 0.32 * g.fw, g.chin_y + 4), fill=beard)
        for side in (-1, 1):  # the strips joining it to the mouth corners
            x = g.cx + side * (g.mouth_w + 2)
            draw.line([(x, g.mouth_y - 3), (x - side * 3, top + 8)], fill=beard, width=5)
    if a["Sideburns"]:
        top, bottom = g.eye_y - 0.3 * g.fh, g.nose_y + 0.12 * g.fh
        draw.rectangle((g.cx - g.fw + 0.5, top, g.cx - 0.8 * g.fw, bottom), fill=shade(spec.hair, 0.9))
        draw.rectangle((g.cx + 0.8 * g.fw, top, g.cx + g.fw - 0.5, bottom), fill=shade(spec.hair, 0.9))


def draw_mustache(draw: ImageDraw.ImageDraw, g: Geometry, hair: RGB) -> None:
    y, w = g.mouth_y - 2, g.mouth_w + 3
    draw.polygon(
        [
            (g.cx - w, y + 3),
            (g.cx - w * 0.6, y - 6),
            (g.cx, y - 8),
            (g.cx + w * 0.6, y - 6),
            (g.cx + w, y + 3),
            (g.cx, y - 1),
        ],
        fill=beard_color(hair),
    )


def draw_nose(draw: ImageDraw.ImageDraw, g: Geometry, a: dict[str, bool], skin: RGB) -> None:
    cx, y, top = g.cx, g.nose_y, g.eye_y + 2
    bridge, line, dark = shade(skin, 0.78), shade(skin, 0.55), shade(skin, 0.35)
    if a["Big_Nose"]:  # long, wide, bulbous: broad bridge, big tip, wide flared wings
        draw.polygon([(cx - 4, top), (cx + 4, top), (cx + 10, y), (cx - 10, y)], fill=bridge)
        for side in (-1, 1):
            draw.ellipse((cx + side * 10 - 6, y - 6, cx + side * 10 + 6, y + 5), fill=bridge, outline=line, width=2)
        draw.ellipse((cx - 9, y - 9, cx + 9, y + 7), fill=shade(skin, 0.9), outline=line, width=2)
        for side in (-1, 1):
            draw.ellipse((cx + side * 7 - 3.5, y + 2, cx + side * 7 + 3.5, y + 7), fill=dark)
    elif a["Pointy_Nose"]:  # narrow bridge ending in a sharp downward point
        draw.polygon([(cx - 1.5, top), (cx + 1.5, top), (cx + 6, y - 1), (cx, y + 8), (cx - 6, y - 1)], fill=bridge)
        draw.line([(cx - 6, y - 1), (cx, y + 8), (cx + 6, y - 1)], fill=dark, width=2)
        draw.line([(cx - 1.5, top), (cx - 6, y - 1)], fill=line, width=1)
    else:
        draw.polygon([(cx - 2, top), (cx + 2, top), (cx + 5, y), (cx - 5, y)], fill=bridge)
        draw.ellipse((cx - 5, y - 4, cx + 5, y + 3), fill=shade(skin, 0.88))
        for side in (-1, 1):
            draw.ellipse((cx + side * 3.5 - 1.5, y + 0.5, cx + side * 3.5 + 1.5, y + 3), fill=dark)


def draw_eyes(draw: ImageDraw.ImageDraw, g: Geometry, spec: FaceSpec, rng: np.random.Generator) -> None:
    a = spec.attributes
    half_h = 1.6 if a["Narrow_Eyes"] else 4.2
    shadow = jitter(
        rng, ((130, 70, 160), (60, 90, 180), (120, 70, 50), (50, 45, 60), (190, 90, 140))[int(rng.integers(5))], 10
    )
    for side in (-1, 1):
        ex, ey = g.cx + side * g.eye_dx, g.eye_y
        if a["Bags_Under_Eyes"]:
            draw.chord((ex - 10, ey - 2, ex + 10, ey + 11), 0, 180, fill=shade(spec.skin, 0.7, 200))
            draw.arc((ex - 9, ey + 1, ex + 9, ey + 11), 20, 160, fill=shade(spec.skin, 0.5), width=2)
        if a["Heavy_Makeup"]:
            draw.ellipse((ex - 11, ey - 10, ex + 11, ey + 2), fill=(*shadow, 220))
        draw.ellipse((ex - 8.5, ey - half_h, ex + 8.5, ey + half_h), fill=(246, 246, 240))
        iris_h = min(3.8, half_h)
        draw.ellipse((ex - 3.8, ey - iris_h, ex + 3.8, ey + iris_h), fill=spec.iris)
        draw.ellipse((ex - 1.6, ey - min(1.6, half_h), ex + 1.6, ey + min(1.6, half_h)), fill=(10, 10, 10))
        lid_width = 3 if a["Heavy_Makeup"] else 2
        draw.arc((ex - 9, ey - half_h - 1, ex + 9, ey + half_h + 1), 180, 360, fill=(25, 20, 20), width=lid_width)
        if a["Heavy_Makeup"]:  # winged liner
            draw.line([(ex + side * 8.5, ey - 1), (ex + side * 12.5, ey - 4)], fill=(15, 10, 10), width=2)


def draw_brows(draw: ImageDraw.ImageDraw, g: Geometry, a: dict[str, bool], hair: RGB) -> None:
    color = shade(hair, 0.5 if sum(hair) > 300 else 0.9)
    width = 6 if a["Bushy_Eyebrows"] else 3 if a["Male"] else 2
    t = np.linspace(0.0, 1.0, 9)
    if a["Arched_Eyebrows"]:
        lift = 8.0 * np.where(t < 0.6, t / 0.6, (1 - t) / 0.4)
    else:
        lift = 1.0 * np.sin(np.pi * t)
    for side in (-1, 1):
        x = g.cx + side * (g.eye_dx - 9 + 20 * t)  # inner end to outer end
        y = g.brow_y - lift + 2 * t
        draw.line(list(zip(x.tolist(), y.tolist())), fill=color, width=width, joint="curve")


def draw_mouth(
    draw: ImageDraw.ImageDraw, g: Geometry, spec: FaceSpec, rng: np.random.Generator
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Draw the lips; return the two mouth corners."""
    a = spec.attributes
    if a["Wearing_Lipstick"]:
        lips = jitter(rng, ((200, 20, 45), (175, 10, 60), (215, 40, 95), (150, 15, 35))[int(rng.integers(4))], 10)
    else:
        lips = mix(spec.skin, (165, 85, 85), 0.45)
    w = g.mouth_w * (1.3 if a["Smiling"] else 1.0) * (1.12 if a["Big_Lips"] else 1.0)
    curve = 7.0 if a["Smiling"] else 0.5  # corners this much higher than the centre
    gap = (8.0 if a["Smiling"] else 6.0) if a["Mouth_Slightly_Open"] else 0.0
    upper, lower = (6.0, 8.5) if a["Big_Lips"] else (2.5, 3.5)
    u = np.linspace(-1.0, 1.0, 17)
    x = g.cx + w * u
    envelope = np.sqrt(1 - u**2)
    line = g.mouth_y - curve * u**2
    opening = line + gap * envelope
    bottom = opening + lower * envelope**0.7
    top = line - upper * envelope**0.6

    def band(upper_edge: np.ndarray, lower_edge: np.ndarray) -> list[tuple[float, float]]:
        return list(zip(x.tolist(), upper_edge.tolist())) + list(zip(x[::-1].tolist(), lower_edge[::-1].tolist()))

    if gap:
        draw.polygon(band(line, opening), fill=(70, 22, 28))
        if a["Smiling"]:
            draw.polygon(band(line, line + 0.5 * gap * envelope), fill=(240, 238, 228))
    draw.polygon(band(top, line), fill=lips)
    draw.polygon(band(opening, bottom), fill=lips)
    if not gap:
        draw.line(list(zip(x.tolist(), line.tolist())), fill=shade(lips, 0.45), width=1)
    corner_y = g.mouth_y - curve
    if a["Smiling"]:  # smile creases beside the corners
        for side in (-1, 1):
            x0 = g.cx + side * (w + 3)
            draw.arc(
                (x0 - 4, corner_y - 6, x0 + 4, corner_y + 6),
                -70 if side > 0 else 110,
                70 if side > 0 else 250,
                fill=shade(spec.skin, 0.6),
                width=2,
            )
    return (g.cx - w, corner_y), (g.cx + w, corner_y)
