"""Synthetic CelebA: generated faces in CelebA's exact file formats, for offline tests and the quickstart.

Files (the original Google Drive / torchvision layout, written by :func:`generate_celeba`)::

    img_align_celeba/000001.jpg ...     178 wide x 218 high RGB JPEGs, names zero-padded to 6 digits
    list_attr_celeba.txt                count line; the 40 names (trailing space, as in the real file); then
                                        "000001.jpg -1  1  1 -1 ..." (values -1/1, right-aligned in 2 columns)
    list_eval_partition.txt             "000001.jpg 0" (0 train, 1 valid, 2 test), no header
    identity_CelebA.txt                 "000001.jpg 2880", no header
    list_bbox_celeba.txt                count line; "image_id x_1 y_1 width height"; rows
    list_landmarks_align_celeba.txt     count line; "lefteye_x lefteye_y ... rightmouth_y"; rows
    .faceattr_synthetic.json            marker {generator, version, num_images, seed, layout}, written LAST

:func:`write_kaggle_layout` converts that folder to Kaggle's ``jessicali9530/celeba-dataset`` layout (CSV files,
images under ``img_align_celeba/img_align_celeba/``, no identity file). Unlike the real data, the bounding boxes
refer to the generated (aligned) image itself, since there is no "in the wild" original.

Like CelebA, partitions are contiguous index ranges (~80/10/10) and identity-disjoint; each identity has a few
(1-6) images scattered within its partition.

Attribute model: labels are drawn from a small generative model with CelebA-like marginals and correlations, in
two levels. An identity fixes sex, age, skin tone, hair colour, baldness, nose, eye and face shape; each image then
draws hair style, expression, make-up, facial hair (men only), accessories and blur, conditioned on the identity
(lipstick and make-up almost only on women, mouth opening and high cheekbones tied to smiling, double chin to
chubbiness, ...). ``No_Beard`` is exactly "no 5 o'clock shadow, goatee, mustache or full beard", and
``Attractive`` is a noisy score of youth, sex, make-up, chubbiness, bags, baldness and blur. A label is only set
when its cue is visible (a hat hides baldness and a receding hairline; bangs hide the hairline).

Rendering (PIL ImageDraw + numpy) gives every attribute a visible cue inside the central 178x178 square (rows
20..198), which is what training crops: hair colour, texture (straight/wavy strands), bangs, hairline, baldness;
eyebrow shape and thickness; eye shape, bags, eye shadow; nose size and shape; lip size, colour, smile and
opening; stubble, goatee, mustache, sideburns; cheek shading and blush; face width (chubby), length (oval), jaw
(male), double chin; skin tone (pale); wrinkles (not young); glasses, hat, earrings, necklace, shirt and tie.
Nuisances: face position and scale jitter, background colours, lighting tilt and brightness, sensor noise and
JPEG quality 88-93.

Everything is deterministic per seed, independent of the number of worker processes: each image uses its own
``numpy.random.default_rng([seed, stream, index])``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.errors import UserError

GENERATOR_VERSION = 1
WIDTH, HEIGHT = 178, 218
IMAGE_DIR = "img_align_celeba"
MARKER = ".faceattr_synthetic.json"
LOCK = ".faceattr_synthetic.lock"
LAYOUTS = ("original", "kaggle")

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
BBOX_FILE = "list_bbox_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
BBOX_COLUMNS = ("x_1", "y_1", "width", "height")
LANDMARK_COLUMNS = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)

# Independent random streams: default_rng([seed, stream, index]).
_LAYOUT_STREAM, _IDENTITY_STREAM, _IMAGE_STREAM, _RENDER_STREAM = range(4)
_PARTITION_FRACTIONS = (0.098, 0.099)  # valid, test (CelebA: 19867 and 19962 of 202599)
_MAX_IMAGES_PER_IDENTITY = 6
_CHUNK = 64  # images per worker task

RGB = tuple[int, int, int]

# ----------------------------------------------------------------------------------------------------------------
# Attribute model
# ----------------------------------------------------------------------------------------------------------------

_HAIR_PALETTE: dict[str, tuple[RGB, ...]] = {
    "black": ((26, 22, 22), (38, 30, 28)),
    "brown": ((98, 62, 36), (118, 76, 44)),
    "blond": ((226, 194, 122), (206, 170, 100)),
    "gray": ((182, 182, 186), (150, 150, 154)),
    "other": ((150, 58, 30), (180, 92, 46)),  # auburn / copper: coloured, but none of CelebA's four labels
}
_IRIS_PALETTE: tuple[RGB, ...] = ((70, 45, 30), (40, 30, 25), (60, 100, 150), (70, 110, 70))
_SKIN_LIGHT, _SKIN_DARK, _SKIN_PALE = (226, 186, 158), (112, 74, 54), (247, 228, 220)


@dataclass(frozen=True)
class _Identity:
    """What stays the same across one person's images."""

    male: bool
    young: bool
    pale: bool
    bald: bool
    receding: bool
    hair_color: str  # a _HAIR_PALETTE key
    bushy_brows: bool
    big_nose: bool
    pointy_nose: bool
    narrow_eyes: bool
    chubby: bool
    oval: bool
    skin: RGB
    hair: RGB
    iris: RGB


@dataclass(frozen=True)
class FaceSpec:
    """One image's labels (name -> bool, all 40) and the latent appearance the renderer needs."""

    attributes: dict[str, bool]
    full_beard: bool
    skin: RGB
    hair: RGB
    iris: RGB


def _bern(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _jitter(rng: np.random.Generator, rgb: RGB, amount: int) -> RGB:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _sample_hair_color(rng: np.random.Generator, male: bool, young: bool) -> str:
    if _bern(rng, 0.012 if young else 0.17):
        return "gray"
    names = ("black", "blond", "brown", "other")
    weights = (0.31, 0.05, 0.19, 0.45) if male else (0.22, 0.28, 0.25, 0.25)
    return names[int(rng.choice(4, p=weights))]


def _sample_skin(rng: np.random.Generator, pale: bool) -> RGB:
    if pale:
        return _jitter(rng, _SKIN_PALE, 4)
    t = rng.random() ** 1.4  # mostly light to medium
    return _jitter(rng, tuple(round(a + (b - a) * t) for a, b in zip(_SKIN_LIGHT, _SKIN_DARK)), 6)


def _sample_identity(rng: np.random.Generator) -> _Identity:
    male = _bern(rng, 0.42)
    young = _bern(rng, 0.66 if male else 0.85)
    pale = _bern(rng, 0.025 if male else 0.06)
    bald = male and _bern(rng, 0.02 if young else 0.2)
    receding_rate = {(True, True): 0.08, (True, False): 0.3, (False, True): 0.03, (False, False): 0.1}
    receding = not bald and _bern(rng, receding_rate[male, young])
    hair_color = _sample_hair_color(rng, male, young)
    big_nose = _bern(rng, 0.38 if male else 0.13)
    chubby = _bern(rng, (0.035 if young else 0.16) * (1.3 if male else 0.8))
    return _Identity(
        male=male,
        young=young,
        pale=pale,
        bald=bald,
        receding=receding,
        hair_color=hair_color,
        bushy_brows=_bern(rng, 0.26 if male else 0.06),
        big_nose=big_nose,
        pointy_nose=not big_nose and _bern(rng, 0.2 if male else 0.44),
        narrow_eyes=_bern(rng, 0.115),
        chubby=chubby,
        oval=not chubby and _bern(rng, 0.2 if male else 0.36),
        skin=_sample_skin(rng, pale),
        hair=_jitter(rng, _HAIR_PALETTE[hair_color][int(rng.integers(2))], 8),
        iris=_IRIS_PALETTE[int(rng.integers(len(_IRIS_PALETTE)))],
    )


def _attractive(a: dict[str, bool], rng: np.random.Generator) -> bool:
    score = (
        1.6 * a["Young"] + 0.2 * (not a["Male"]) + 0.4 * a["Heavy_Makeup"] + 0.3 * a["Smiling"]
        - 1.3 * a["Chubby"] - 0.8 * a["Bags_Under_Eyes"] - 1.0 * a["Bald"] - 0.5 * a["Double_Chin"]
        - 0.6 * a["Blurry"] - 0.4 * a["Eyeglasses"] - 0.4 * a["Big_Nose"] + rng.normal(0.0, 0.35)
    )
    return score > 1.5


def _sample_image_attributes(ident: _Identity, rng: np.random.Generator) -> tuple[dict[str, bool], bool]:
    """Return (all 40 labels, full beard) of one image of ``ident``."""
    male, young = ident.male, ident.young
    hat = _bern(rng, 0.05)
    bangs = not ident.bald and _bern(rng, 0.08 if male else 0.21)
    texture = "none" if ident.bald else rng.choice(("wavy", "straight", "none"),
                                                    p=(0.13, 0.13, 0.74) if male else (0.5, 0.28, 0.22))
    smiling = _bern(rng, 0.48)
    makeup = _bern(rng, 0.01 if male else 0.66)
    lipstick = _bern(rng, (0.5 if makeup else 0.003) if male else (0.97 if makeup else 0.55))
    shadow = male and _bern(rng, 0.25)
    goatee = male and _bern(rng, 0.15)
    mustache = male and _bern(rng, 0.45 if goatee else 0.04)
    full_beard = male and _bern(rng, 0.08)
    chubby = ident.chubby
    a = {
        "5_o_Clock_Shadow": shadow,
        "Arched_Eyebrows": _bern(rng, 0.06 if male else 0.4),
        "Bags_Under_Eyes": _bern(rng, (0.45 if not young else 0.13) + (0.05 if male else 0.0)),
        "Bald": ident.bald and not hat,
        "Bangs": bangs,
        "Big_Lips": _bern(rng, 0.16 if male else 0.3),
        "Big_Nose": ident.big_nose,
        "Black_Hair": ident.hair_color == "black",
        "Blond_Hair": ident.hair_color == "blond",
        "Blurry": _bern(rng, 0.05),
        "Brown_Hair": ident.hair_color == "brown",
        "Bushy_Eyebrows": ident.bushy_brows,
        "Chubby": chubby,
        "Double_Chin": _bern(rng, 0.5 if chubby else 0.02),
        "Eyeglasses": _bern(rng, 0.1 if male else 0.04),
        "Goatee": goatee,
        "Gray_Hair": ident.hair_color == "gray",
        "Heavy_Makeup": makeup,
        "High_Cheekbones": _bern(rng, 0.75 if smiling else 0.17),
        "Male": male,
        "Mouth_Slightly_Open": _bern(rng, 0.7 if smiling else 0.27),
        "Mustache": mustache,
        "Narrow_Eyes": ident.narrow_eyes,
        "No_Beard": not (shadow or goatee or mustache or full_beard),
        "Oval_Face": ident.oval,
        "Pale_Skin": ident.pale,
        "Pointy_Nose": ident.pointy_nose,
        "Receding_Hairline": ident.receding and not (hat or bangs),
        "Rosy_Cheeks": _bern(rng, 0.015 if male else (0.13 if makeup else 0.04)),
        "Sideburns": male and _bern(rng, 0.35 if (goatee or full_beard) else 0.07),
        "Smiling": smiling,
        "Straight_Hair": texture == "straight",
        "Wavy_Hair": texture == "wavy",
        "Wearing_Earrings": _bern(rng, 0.02 if male else 0.3),
        "Wearing_Hat": hat,
        "Wearing_Lipstick": lipstick,
        "Wearing_Necklace": _bern(rng, 0.01 if male else 0.2),
        "Wearing_Necktie": _bern(rng, 0.16 if male else 0.005),
        "Young": young,
    }
    a["Attractive"] = _attractive(a, rng)
    return {name: a[name] for name in CELEBA_ATTRIBUTES}, full_beard


def sample_face(seed: int, index: int, identity: int) -> FaceSpec:
    """The labels and appearance of image ``index`` (0-based) of person ``identity`` for ``seed``."""
    ident = _sample_identity(np.random.default_rng([seed, _IDENTITY_STREAM, identity]))
    attributes, full_beard = _sample_image_attributes(ident, np.random.default_rng([seed, _IMAGE_STREAM, index]))
    return FaceSpec(attributes, full_beard, ident.skin, ident.hair, ident.iris)


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
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


@dataclass(frozen=True)
class RenderedFace:
    image: Image.Image
    bbox: tuple[int, int, int, int]  # x_1, y_1, width, height
    landmarks: tuple[int, ...]  # the 10 LANDMARK_COLUMNS


def _shade(rgb: RGB, factor: float, alpha: int | None = None) -> tuple[int, ...]:
    shaded = tuple(int(min(255, c * factor)) for c in rgb)
    return shaded if alpha is None else (*shaded, alpha)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _random_color(rng: np.random.Generator) -> RGB:
    return tuple(int(v) for v in rng.integers(20, 235, 3))


def _beard_color(hair: RGB) -> RGB:
    return _shade(hair, 0.55 if sum(hair) > 400 else 0.85)  # light hair gives a darker beard


def _geometry(a: dict[str, bool], rng: np.random.Generator) -> _Geometry:
    scale = rng.uniform(0.94, 1.06)
    base_w = 36.0 * scale * (1.06 if a["Male"] else 1.0)
    fw = base_w * (1.2 if a["Chubby"] else 1.0) * (0.92 if a["Oval_Face"] else 1.0)
    fh = 46.0 * scale * (1.1 if a["Oval_Face"] else 1.0) * (1.02 if a["Male"] else 1.0)
    jaw = 1.6 if a["Oval_Face"] else 3.4 if a["Male"] else 2.3 if a["Chubby"] else 2.1
    cx, cy = 89.0 + rng.uniform(-4, 4), 104.0 + rng.uniform(-4, 4)
    eye_y = cy - 0.05 * fh
    return _Geometry(
        cx=cx, cy=cy, fw=fw, fh=fh, jaw=jaw,
        eye_dx=0.44 * base_w, eye_y=eye_y, brow_y=eye_y - 0.25 * fh,
        nose_y=cy + 0.33 * fh, mouth_y=cy + 0.6 * fh, mouth_w=0.3 * base_w,
    )


def _face_outline(g: _Geometry, points: int = 96) -> list[tuple[float, float]]:
    """Head contour: an ellipse on top, a superellipse with exponent ``g.jaw`` below the eyes."""
    theta = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    k = np.where(s > 0, g.jaw, 2.0)
    x = g.cx + g.fw * np.sign(c) * np.abs(c) ** (2 / k)
    y = g.cy + g.fh * np.sign(s) * np.abs(s) ** (2 / k)
    return list(zip(x.tolist(), y.tolist()))


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


def _neck_half_width(g: _Geometry, a: dict[str, bool]) -> float:
    return (0.4 if a["Chubby"] else 0.46) * g.fw


def _chin_box(g: _Geometry) -> tuple[float, float, float, float]:
    """Where a double chin goes: just below the jaw line."""
    return g.cx - 0.62 * g.fw, g.chin_y - 14, g.cx + 0.62 * g.fw, g.chin_y + 15


def _draw_torso(draw: ImageDraw.ImageDraw, g: _Geometry, a: dict[str, bool], skin: RGB,
                rng: np.random.Generator) -> None:
    cx, chin = g.cx, g.chin_y
    neck_w = _neck_half_width(g, a)
    draw.rectangle((cx - neck_w, g.cy + 0.3 * g.fh, cx + neck_w, HEIGHT), fill=_shade(skin, 0.9))
    draw.ellipse((cx - neck_w, chin - 10, cx + neck_w, chin + 8), fill=_shade(skin, 0.78))  # shadow under the chin
    shoulder_w = (2.4 if a["Male"] else 2.0) * g.eye_dx * 2.3
    top = chin + 20
    if a["Wearing_Necktie"]:
        jacket = _jitter(rng, ((30, 34, 60), (35, 35, 38), (80, 80, 86), (70, 50, 36))[int(rng.integers(4))], 8)
        draw.ellipse((cx - shoulder_w, top, cx + shoulder_w, top + 150), fill=jacket)
        draw.polygon([(cx - 0.55 * g.fw, top - 4), (cx + 0.55 * g.fw, top - 4), (cx + 6, HEIGHT), (cx - 6, HEIGHT)],
                     fill=_jitter(rng, (236, 238, 242), 8))  # shirt
        tie = _jitter(rng, ((190, 30, 40), (40, 60, 170), (40, 120, 60), (130, 40, 130), (200, 150, 30))
                      [int(rng.integers(5))], 15)
        knot_y = top - 2
        draw.polygon([(cx - 5, knot_y), (cx + 5, knot_y), (cx + 3.5, knot_y + 7), (cx - 3.5, knot_y + 7)], fill=tie)
        draw.polygon([(cx - 3.5, knot_y + 7), (cx + 3.5, knot_y + 7), (cx + 8, HEIGHT), (cx - 8, HEIGHT)], fill=tie)
        for side in (-1, 1):  # collar wings
            draw.polygon([(cx + side * 5, knot_y), (cx + side * 0.6 * g.fw, top - 6), (cx + side * 14, knot_y + 12)],
                         fill=(250, 250, 250))
        return
    draw.ellipse((cx - shoulder_w, top, cx + shoulder_w, top + 150), fill=_random_color(rng))
    neckline = 0.75 * g.fw if not a["Male"] else 0.5 * g.fw
    depth = rng.uniform(14, 24) if not a["Male"] else rng.uniform(4, 10)
    draw.chord((cx - neckline, top - depth, cx + neckline, top + depth), 0, 180, fill=_shade(skin, 0.9))


def _draw_ears(draw: ImageDraw.ImageDraw, g: _Geometry, skin: RGB) -> None:
    top, bottom = g.eye_y - 0.14 * g.fh, g.nose_y + 0.1 * g.fh
    for side in (-1, 1):
        x = g.cx + side * g.fw
        draw.ellipse((x - 6, top, x + 6, bottom), fill=_shade(skin, 0.95))
        draw.ellipse((x - 3, top + 4, x + 3, bottom - 6), fill=_shade(skin, 0.8))


def _draw_head(draw: ImageDraw.ImageDraw, g: _Geometry, a: dict[str, bool], skin: RGB) -> None:
    if a["Double_Chin"]:  # a second, lower chin below the jaw line
        draw.ellipse(_chin_box(g), fill=_shade(skin, 0.95), outline=_shade(skin, 0.55), width=3)
    draw.polygon(_face_outline(g), fill=skin)
    if a["Double_Chin"]:
        draw.arc((g.cx - 0.45 * g.fw, g.chin_y - 16, g.cx + 0.45 * g.fw, g.chin_y - 1), 25, 155,
                 fill=_shade(skin, 0.6), width=3)


def _draw_cheeks(draw: ImageDraw.ImageDraw, g: _Geometry, a: dict[str, bool], skin: RGB) -> None:
    for side in (-1, 1):
        if a["High_Cheekbones"]:
            start = (g.cx + side * 0.9 * g.fw, g.eye_y + 0.16 * g.fh)
            end = (g.cx + side * 0.42 * g.fw, g.nose_y + 0.12 * g.fh)
            draw.line([start, end], fill=_shade(skin, 0.7, 170), width=5)
            hx, hy = g.cx + side * 0.58 * g.fw, g.eye_y + 0.2 * g.fh
            draw.ellipse((hx - 7, hy - 4, hx + 7, hy + 4), fill=(255, 255, 255, 80))
        if a["Rosy_Cheeks"]:
            rx, ry = g.cx + side * 0.55 * g.fw, g.nose_y - 0.02 * g.fh
            draw.ellipse((rx - 11, ry - 8, rx + 11, ry + 8), fill=(240, 70, 100, 170))


def _draw_wrinkles(draw: ImageDraw.ImageDraw, g: _Geometry, skin: RGB) -> None:
    line = _shade(skin, 0.6)
    for i in range(3):  # forehead
        y = g.brow_y - 7 - 5 * i
        draw.arc((g.cx - 0.45 * g.fw, y, g.cx + 0.45 * g.fw, y + 8), 200, 340, fill=line, width=2)
    for side in (-1, 1):
        ex = g.cx + side * (g.eye_dx + 10)
        for dy in (-4, 0, 4):  # crow's feet
            draw.line([(ex, g.eye_y + dy / 2), (ex + side * 7, g.eye_y + dy)], fill=line, width=2)
        nx, mx = g.cx + side * 8, g.cx + side * (g.mouth_w + 5)  # nasolabial fold
        draw.line([(nx, g.nose_y - 3), (nx + side * 6, g.nose_y + 5), (mx, g.mouth_y + 5)], fill=line, width=2)


def _lower_face_mask(g: _Geometry, top: float) -> Image.Image:
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(_face_outline(g), fill=255)
    draw.rectangle((0, 0, WIDTH, top), fill=0)
    return mask


def _stipple(image: Image.Image, mask: Image.Image, color: RGB, density: float, strength: float,
             rng: np.random.Generator) -> None:
    """Paint random dots of ``color`` inside ``mask`` (stubble / beard texture)."""
    box = mask.getbbox()
    if box is None:
        return
    region = np.asarray(mask.crop(box), dtype=np.float32)
    dots = rng.random(region.shape, dtype=np.float32) < density
    alpha = np.where(dots, region * strength, 0).astype(np.uint8)
    image.paste(color, box, Image.fromarray(alpha, "L"))


def _draw_facial_hair(image: Image.Image, g: _Geometry, spec: FaceSpec, rng: np.random.Generator) -> None:
    a = spec.attributes
    beard = _beard_color(spec.hair)
    if a["5_o_Clock_Shadow"]:
        _stipple(image, _lower_face_mask(g, g.nose_y + 0.08 * g.fh), (45, 42, 48), 0.5, 0.75, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    if spec.full_beard:
        mask = _lower_face_mask(g, g.nose_y + 0.02 * g.fh)
        ImageDraw.Draw(mask).ellipse((g.cx - 0.6 * g.fw, g.chin_y - 12, g.cx + 0.6 * g.fw, g.chin_y + 8), fill=255)
        image.paste(beard, (0, 0), mask)
        _stipple(image, mask, _shade(beard, 0.6), 0.4, 1.0, rng)
    if a["Goatee"]:
        top = g.mouth_y + 0.08 * g.fh
        draw.ellipse((g.cx - 0.32 * g.fw, top, g.cx + 0.32 * g.fw, g.chin_y + 4), fill=beard)
        for side in (-1, 1):  # the strips joining it to the mouth corners
            x = g.cx + side * (g.mouth_w + 2)
            draw.line([(x, g.mouth_y - 3), (x - side * 3, top + 8)], fill=beard, width=5)
    if a["Sideburns"]:
        top, bottom = g.eye_y - 0.3 * g.fh, g.nose_y + 0.12 * g.fh
        draw.rectangle((g.cx - g.fw + 0.5, top, g.cx - 0.8 * g.fw, bottom), fill=_shade(spec.hair, 0.9))
        draw.rectangle((g.cx + 0.8 * g.fw, top, g.cx + g.fw - 0.5, bottom), fill=_shade(spec.hair, 0.9))


def _draw_mustache(draw: ImageDraw.ImageDraw, g: _Geometry, hair: RGB) -> None:
    y, w = g.mouth_y - 2, g.mouth_w + 3
    draw.polygon([(g.cx - w, y + 3), (g.cx - w * 0.6, y - 6), (g.cx, y - 8), (g.cx + w * 0.6, y - 6),
                  (g.cx + w, y + 3), (g.cx, y - 1)], fill=_beard_color(hair))


def _draw_nose(draw: ImageDraw.ImageDraw, g: _Geometry, a: dict[str, bool], skin: RGB) -> None:
    cx, y, top = g.cx, g.nose_y, g.eye_y + 2
    shade, line, dark = _shade(skin, 0.78), _shade(skin, 0.55), _shade(skin, 0.35)
    if a["Big_Nose"]:  # long, wide, bulbous: broad bridge, big tip, wide flared wings
        draw.polygon([(cx - 4, top), (cx + 4, top), (cx + 10, y), (cx - 10, y)], fill=shade)
        for side in (-1, 1):
            draw.ellipse((cx + side * 10 - 6, y - 6, cx + side * 10 + 6, y + 5), fill=shade, outline=line, width=2)
        draw.ellipse((cx - 9, y - 9, cx + 9, y + 7), fill=_shade(skin, 0.9), outline=line, width=2)
        for side in (-1, 1):
            draw.ellipse((cx + side * 7 - 3.5, y + 2, cx + side * 7 + 3.5, y + 7), fill=dark)
    elif a["Pointy_Nose"]:  # narrow bridge ending in a sharp downward point
        draw.polygon([(cx - 1.5, top), (cx + 1.5, top), (cx + 6, y - 1), (cx, y + 8), (cx - 6, y - 1)], fill=shade)
        draw.line([(cx - 6, y - 1), (cx, y + 8), (cx + 6, y - 1)], fill=dark, width=2)
        draw.line([(cx - 1.5, top), (cx - 6, y - 1)], fill=line, width=1)
    else:
        draw.polygon([(cx - 2, top), (cx + 2, top), (cx + 5, y), (cx - 5, y)], fill=shade)
        draw.ellipse((cx - 5, y - 4, cx + 5, y + 3), fill=_shade(skin, 0.88))
        for side in (-1, 1):
            draw.ellipse((cx + side * 3.5 - 1.5, y + 0.5, cx + side * 3.5 + 1.5, y + 3), fill=dark)


def _draw_eyes(draw: ImageDraw.ImageDraw, g: _Geometry, spec: FaceSpec, rng: np.random.Generator) -> None:
    a = spec.attributes
    half_h = 1.6 if a["Narrow_Eyes"] else 4.2
    shadow = _jitter(rng, ((130, 70, 160), (60, 90, 180), (120, 70, 50), (50, 45, 60), (190, 90, 140))
                     [int(rng.integers(5))], 10)
    for side in (-1, 1):
        ex, ey = g.cx + side * g.eye_dx, g.eye_y
        if a["Bags_Under_Eyes"]:
            draw.chord((ex - 10, ey - 2, ex + 10, ey + 11), 0, 180, fill=_shade(spec.skin, 0.7, 200))
            draw.arc((ex - 9, ey + 1, ex + 9, ey + 11), 20, 160, fill=_shade(spec.skin, 0.5), width=2)
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


def _draw_brows(draw: ImageDraw.ImageDraw, g: _Geometry, a: dict[str, bool], hair: RGB) -> None:
    color = _shade(hair, 0.5 if sum(hair) > 300 else 0.9)
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


def _draw_mouth(draw: ImageDraw.ImageDraw, g: _Geometry, spec: FaceSpec,
                rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float]]:
    """Draw the lips; return the two mouth corners."""
    a = spec.attributes
    if a["Wearing_Lipstick"]:
        lips = _jitter(rng, ((200, 20, 45), (175, 10, 60), (215, 40, 95), (150, 15, 35))[int(rng.integers(4))], 10)
    else:
        lips = _mix(spec.skin, (165, 85, 85), 0.45)
    w = g.mouth_w * (1.3 if a["Smiling"] else 1.0) * (1.12 if a["Big_Lips"] else 1.0)
    curve = 7.0 if a["Smiling"] else 0.5  # corners this much higher than the centre
    gap = (8.0 if a["Smiling"] else 6.0) if a["Mouth_Slightly_Open"] else 0.0
    upper, lower = (6.0, 8.5) if a["Big_Lips"] else (2.5, 3.5)
    u = np.linspace(-1.0, 1.0, 17)
    x = g.cx + w * u
    envelope = np.sqrt(1 - u ** 2)
    line = g.mouth_y - curve * u ** 2
    opening = line + gap * envelope
    bottom = opening + lower * envelope ** 0.7
    top = line - upper * envelope ** 0.6

    def band(upper_edge: np.ndarray, lower_edge: np.ndarray) -> list[tuple[float, float]]:
        return list(zip(x.tolist(), upper_edge.tolist())) + list(zip(x[::-1].tolist(), lower_edge[::-1].tolist()))

    if gap:
        draw.polygon(band(line, opening), fill=(70, 22, 28))
        if a["Smiling"]:
            draw.polygon(band(line, line + 0.5 * gap * envelope), fill=(240, 238, 228))
    draw.polygon(band(top, line), fill=lips)
    draw.polygon(band(opening, bottom), fill=lips)
    if not gap:
        draw.line(list(zip(x.tolist(), line.tolist())), fill=_shade(lips, 0.45), width=1)
    corner_y = g.mouth_y - curve
    if a["Smiling"]:  # smile creases beside the corners
        for side in (-1, 1):
            x0 = g.cx + side * (w + 3)
            draw.arc((x0 - 4, corner_y - 6, x0 + 4, corner_y + 6), -70 if side > 0 else 110,
                     70 if side > 0 else 250, fill=_shade(spec.skin, 0.6), width=2)
    return (g.cx - w, corner_y), (g.cx + w, corner_y)


def _hairline(g: _Geometry, a: dict[str, bool]) -> Callable[[float], float]:
    """Row of the hairline as a function of x (face pixels below it are skin)."""
    if a["Bangs"]:
        return lambda x: g.brow_y - 5
    if a["Receding_Hairline"]:
        return lambda x: g.cy - 0.82 * g.fh - 0.25 * g.fh * math.exp(-(((abs(x - g.cx) / g.fw) - 0.55) / 0.2) ** 2)
    return lambda x: g.cy - 0.62 * g.fh + 0.12 * g.fh * ((x - g.cx) / g.fw) ** 2


def _hair_mask(g: _Geometry, a: dict[str, bool], long_hair: bool, volume: float) -> Image.Image:
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(mask)
    outline = _face_outline(g)
    if a["Bald"]:
        for side in (-1, 1):  # the fringe left at the sides
            x = g.cx + side * (g.fw + 1)
            draw.ellipse((x - 5, g.eye_y - 0.35 * g.fh, x + 5, g.eye_y + 0.1 * g.fh), fill=255)
        draw.polygon(outline, fill=0)
        return mask
    width = g.fw + 6 + volume
    draw.ellipse((g.cx - width, g.cy - g.fh - 7 - volume, g.cx + width, g.cy + 0.3 * g.fh), fill=255)
    if long_hair:
        draw.rounded_rectangle((g.cx - width - 2, g.cy - 0.3 * g.fh, g.cx + width + 2, g.chin_y + 30),
                               radius=10, fill=255)
    hairline = _hairline(g, a)
    draw.polygon([(x, max(y, hairline(x))) for x, y in outline], fill=0)
    neck = _neck_half_width(g, a)  # long hair falls behind the neck, not over it
    draw.rectangle((g.cx - neck, g.cy, g.cx + neck, HEIGHT), fill=0)
    if a["Double_Chin"]:
        draw.ellipse(_chin_box(g), fill=0)
    return mask


def _hair_layer(g: _Geometry, a: dict[str, bool], hair: RGB, rng: np.random.Generator) -> Image.Image:
    """Solid hair colour with strands: straight lines or sine waves (Wavy_Hair)."""
    layer = Image.new("RGB", (WIDTH, HEIGHT), hair)
    if not (a["Straight_Hair"] or a["Wavy_Hair"]):
        return layer
    draw = ImageDraw.Draw(layer)
    strand = _shade(hair, 0.55) if sum(hair) > 150 else _shade(hair, 2.4)
    ys = np.arange(g.cy - g.fh - 20, g.chin_y + 34, 3.0)
    phase = rng.uniform(0, 2 * math.pi)
    for x0 in np.arange(g.cx - g.fw - 22, g.cx + g.fw + 22, 6.0):
        if a["Wavy_Hair"]:
            xs = x0 + 4.0 * np.sin(2 * math.pi * ys / 16.0 + phase)
        else:
            xs = x0 + (x0 - g.cx) * (ys - ys[0]) / 400.0
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=strand, width=2)
    return layer


def _draw_hair(image: Image.Image, g: _Geometry, a: dict[str, bool], hair: RGB, rng: np.random.Generator) -> None:
    long_hair = _bern(rng, 0.08 if a["Male"] else 0.85)
    volume = 6.0 if a["Wavy_Hair"] else 1.0 if a["Straight_Hair"] else 3.0
    mask = _hair_mask(g, a, long_hair, volume)
    image.paste(_hair_layer(g, a, hair, rng), (0, 0), mask)
    if a["Bald"]:
        ImageDraw.Draw(image, "RGBA").ellipse(
            (g.cx - 0.4 * g.fw, g.cy - 0.95 * g.fh, g.cx + 0.1 * g.fw, g.cy - 0.7 * g.fh), fill=(255, 255, 255, 90))


def _draw_hat(draw: ImageDraw.ImageDraw, g: _Geometry, rng: np.random.Generator) -> None:
    color = _random_color(rng)
    bottom = g.cy - 0.55 * g.fh
    if rng.random() < 0.5:  # beanie
        draw.chord((g.cx - g.fw - 6, g.cy - g.fh - 24, g.cx + g.fw + 6, bottom + 30), 180, 360, fill=color)
        draw.rectangle((g.cx - g.fw - 7, bottom - 8, g.cx + g.fw + 7, bottom + 2), fill=_shade(color, 0.75))
    else:  # brimmed hat
        draw.rounded_rectangle((g.cx - g.fw + 2, g.cy - g.fh - 26, g.cx + g.fw - 2, bottom), radius=8, fill=color)
        draw.rectangle((g.cx - g.fw + 2, bottom - 9, g.cx + g.fw - 2, bottom - 3), fill=_shade(color, 0.6))
        draw.ellipse((g.cx - g.fw - 20, bottom - 7, g.cx + g.fw + 20, bottom + 5), fill=_shade(color, 0.85))


def _draw_glasses(draw: ImageDraw.ImageDraw, g: _Geometry, rng: np.random.Generator) -> None:
    frame = ((20, 20, 20), (70, 40, 25), (30, 30, 90), (110, 20, 30))[int(rng.integers(4))]
    tinted = rng.random() < 0.25
    for side in (-1, 1):
        ex = g.cx + side * g.eye_dx
        draw.rounded_rectangle((ex - 12, g.eye_y - 8, ex + 12, g.eye_y + 8), radius=4,
                               fill=(20, 20, 30, 200) if tinted else (200, 220, 255, 40), outline=frame, width=3)
        draw.line([(ex + side * 12, g.eye_y - 4), (g.cx + side * (g.fw + 2), g.eye_y - 2)], fill=frame, width=3)
    draw.line([(g.cx - g.eye_dx + 12, g.eye_y - 3), (g.cx + g.eye_dx - 12, g.eye_y - 3)], fill=frame, width=3)


def _draw_jewellery(draw: ImageDraw.ImageDraw, g: _Geometry, a: dict[str, bool], rng: np.random.Generator) -> None:
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
        ys = g.chin_y + 14 + 10 * (1 - t ** 2)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=_shade(metal, 0.8), width=2)
        for x, y in zip(xs.tolist(), ys.tolist()):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=metal)


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
    g = _geometry(a, rng)
    image = _background(rng)
    draw = ImageDraw.Draw(image, "RGBA")
    _draw_torso(draw, g, a, spec.skin, rng)
    _draw_ears(draw, g, spec.skin)
    _draw_head(draw, g, a, spec.skin)
    _draw_cheeks(draw, g, a, spec.skin)
    if not a["Young"]:
        _draw_wrinkles(draw, g, spec.skin)
    _draw_facial_hair(image, g, spec, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    _draw_nose(draw, g, a, spec.skin)
    _draw_eyes(draw, g, spec, rng)
    _draw_brows(draw, g, a, spec.hair)
    left_corner, right_corner = _draw_mouth(draw, g, spec, rng)
    if a["Mustache"]:
        _draw_mustache(draw, g, spec.hair)
    _draw_hair(image, g, a, spec.hair, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    if a["Wearing_Hat"]:
        _draw_hat(draw, g, rng)
    if a["Eyeglasses"]:
        _draw_glasses(draw, g, rng)
    _draw_jewellery(draw, g, a, rng)
    image = _finish(image, a["Blurry"], rng)
    top = g.cy - g.fh - 7
    bbox = (round(g.cx - g.fw - 6), round(top), round(2 * g.fw + 12), round(g.chin_y - top))
    points = [(g.cx - g.eye_dx, g.eye_y), (g.cx + g.eye_dx, g.eye_y), (g.cx, g.nose_y), left_corner, right_corner]
    return RenderedFace(image, bbox, tuple(round(v) for point in points for v in point))


# ----------------------------------------------------------------------------------------------------------------
# Dataset layout and files
# ----------------------------------------------------------------------------------------------------------------


def image_name(index: int) -> str:
    """CelebA file name of the 0-based ``index``: 0 -> ``000001.jpg``."""
    return f"{index + 1:06d}.jpg"


def _partition_sizes(num_images: int) -> tuple[int, int, int]:
    if num_images < 3:
        return num_images, 0, 0
    valid, test = (max(1, round(num_images * fraction)) for fraction in _PARTITION_FRACTIONS)
    return num_images - valid - test, valid, test


def assign_layout(seed: int, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (partition, identity) per image: contiguous partitions, identities disjoint across partitions."""
    rng = np.random.default_rng([seed, _LAYOUT_STREAM, 0])
    sizes = _partition_sizes(num_images)
    partitions = np.repeat(np.arange(3), sizes)
    people: list[int] = []  # per image, a running person number (unique across partitions)
    next_person = 0
    for size in sizes:
        in_partition: list[int] = []
        while len(in_partition) < size:
            in_partition += [next_person] * int(rng.integers(1, _MAX_IMAGES_PER_IDENTITY + 1))
            next_person += 1
        people.extend(rng.permutation(in_partition[:size]).tolist())
    identity_numbers = rng.permutation(next_person) + 1  # CelebA-like arbitrary identity labels from 1
    return partitions, identity_numbers[np.asarray(people, dtype=np.int64)]


@dataclass(frozen=True)
class _Record:
    """What the annotation files say about one generated image."""

    labels: tuple[int, ...]  # -1 / 1 per attribute, official order
    bbox: tuple[int, int, int, int]
    landmarks: tuple[int, ...]


def _render_chunk(job: tuple[str, int, list[tuple[int, int]]]) -> list[_Record]:
    """Worker task: render and save the (index, identity) images of one chunk."""
    image_dir, seed, items = job
    records = []
    for index, identity in items:
        spec = sample_face(seed, index, identity)
        rng = np.random.default_rng([seed, _RENDER_STREAM, index])
        face = render_face(spec, rng)
        face.image.save(os.path.join(image_dir, image_name(index)), quality=int(rng.integers(88, 94)))
        labels = tuple(1 if spec.attributes[name] else -1 for name in CELEBA_ATTRIBUTES)
        records.append(_Record(labels, face.bbox, face.landmarks))
    return records


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers instantly; spawn would re-import faceattr.data (torch, lightning: seconds per worker).
    # The workers only run numpy and PIL, so forking a parent that has torch threads is safe.
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _render_all(image_dir: Path, seed: int, identities: np.ndarray, workers: int | None) -> list[_Record]:
    items = list(enumerate(identities.tolist()))
    jobs = [(str(image_dir), seed, items[start:start + _CHUNK]) for start in range(0, len(items), _CHUNK)]
    processes = min(workers or os.cpu_count() or 1, len(jobs))
    if processes <= 1:
        chunks = [_render_chunk(job) for job in jobs]
    else:
        with _pool_context().Pool(processes) as pool:
            chunks = pool.map(_render_chunk, jobs, chunksize=1)
    return [record for chunk in chunks for record in chunk]


def _write_text(path: Path, lines: Sequence[str]) -> None:
    """Write ``lines`` (LF-terminated) via a temporary file and an atomic rename."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(partial, path)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(partial, path)


def _padded(name: str, values: Sequence[int], width: int) -> str:
    return name + "".join(f" {value:{width}d}" for value in values)


def _write_annotations(root: Path, records: list[_Record], partitions: np.ndarray, identities: np.ndarray) -> None:
    names = [image_name(i) for i in range(len(records))]
    count = str(len(records))
    # The real header line ends with a space; keep it so loaders are tested against that quirk.
    _write_text(root / ATTR_FILE, [count, " ".join(CELEBA_ATTRIBUTES) + " "]
                + [_padded(name, r.labels, 2) for name, r in zip(names, records)])
    _write_text(root / PARTITION_FILE, [f"{name} {p}" for name, p in zip(names, partitions.tolist())])
    _write_text(root / IDENTITY_FILE, [f"{name} {i}" for name, i in zip(names, identities.tolist())])
    _write_text(root / BBOX_FILE, [count, " ".join(("image_id", *BBOX_COLUMNS))]
                + [_padded(name, r.bbox, 4) for name, r in zip(names, records)])
    _write_text(root / LANDMARKS_FILE, [count, " ".join(LANDMARK_COLUMNS)]
                + [_padded(name, r.landmarks, 4) for name, r in zip(names, records)])


def _marker(num_images: int, seed: int, layout: str) -> dict:
    return {"generator": "faceattr.data.synthetic", "version": GENERATOR_VERSION, "num_images": num_images,
            "seed": seed, "layout": layout}


def read_marker(root: str | Path) -> dict | None:
    """The completion marker of a generated folder, or None (not generated, or interrupted)."""
    try:
        return json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(root: Path, marker: dict) -> None:
    _write_text(root / MARKER, [json.dumps(marker, sort_keys=True)])


def _remove_stale_images(image_dir: Path, keep: set[str]) -> None:
    """Delete CelebA-named JPEGs left by an earlier, larger generation."""
    for path in image_dir.glob("*.jpg"):
        if re.fullmatch(r"\d{6}\.jpg", path.name) and path.name not in keep:
            path.unlink()


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {path}: {exc.strerror or exc}") from None
    return path


def _check_arguments(num_images: int, seed: int, workers: int | None) -> None:
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise UserError(f"num_images must be a positive integer, got {num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a positive integer or None, got {workers!r}")


def generate_celeba(root: str | Path, num_images: int, seed: int = 0, workers: int | None = None) -> Path:
    """Write ``num_images`` generated faces and all five annotation files in the original layout under ``root``.

    ``workers`` processes render the images (None: one per CPU); the output does not depend on it. The marker file
    is removed first and written last, so an interrupted run never looks complete. Returns ``root``.
    """
    _check_arguments(num_images, seed, workers)
    root = Path(root).expanduser()
    image_dir = _make_dir(root / IMAGE_DIR)
    (root / MARKER).unlink(missing_ok=True)
    _remove_stale_images(image_dir, {image_name(i) for i in range(num_images)})
    partitions, identities = assign_layout(seed, num_images)
    records = _render_all(image_dir, seed, identities, workers)
    _write_annotations(root, records, partitions, identities)
    _write_marker(root, _marker(num_images, seed, "original"))
    return root


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(root: str | Path, num_images: int, seed: int = 0, workers: int | None = None) -> Path:
    """Return ``root`` holding generated data for (num_images, seed), generating it unless already there.

    Safe to call from several processes at once (DDP ranks, parallel sweep jobs): generation happens under an
    exclusive lock on ``root/.faceattr_synthetic.lock`` and the marker is checked again once the lock is held.
    """
    _check_arguments(num_images, seed, workers)
    root = Path(root).expanduser()
    wanted = _marker(num_images, seed, "original")
    if read_marker(root) == wanted:
        return root
    _make_dir(root)
    with _exclusive_lock(root / LOCK):
        if read_marker(root) != wanted:
            generate_celeba(root, num_images, seed, workers)
    return root


def _read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_kaggle_layout(src_original_root: str | Path, dst_root: str | Path) -> Path:
    """Convert an original-layout CelebA folder into Kaggle's layout (``jessicali9530/celeba-dataset``).

    Writes ``list_attr_celeba.csv``, ``list_eval_partition.csv``, ``list_bbox_celeba.csv`` and
    ``list_landmarks_align_celeba.csv`` (Kaggle has no identity file) and hard-links (or copies) the images into
    ``img_align_celeba/img_align_celeba/``. A generator marker in the source is carried over, written last.
    """
    src, dst = Path(src_original_root).expanduser(), Path(dst_root).expanduser()
    dst_images = _make_dir(dst / IMAGE_DIR / IMAGE_DIR)
    (dst / MARKER).unlink(missing_ok=True)
    attr = _read_lines(src / ATTR_FILE)
    partition = _read_lines(src / PARTITION_FILE)
    bbox = _read_lines(src / BBOX_FILE)
    landmarks = _read_lines(src / LANDMARKS_FILE)
    names = [row[0] for row in partition]
    _remove_stale_images(dst_images, set(names))
    for name in names:
        _link_or_copy(src / IMAGE_DIR / name, dst_images / name)
    _write_csv(dst / "list_attr_celeba.csv", ["image_id", *attr[1]], attr[2:])
    _write_csv(dst / "list_eval_partition.csv", ["image_id", "partition"], partition)
    _write_csv(dst / "list_bbox_celeba.csv", bbox[1], bbox[2:])
    _write_csv(dst / "list_landmarks_align_celeba.csv", ["image_id", *landmarks[1]], landmarks[2:])
    marker = read_marker(src)
    if marker is not None:
        _write_marker(dst, {**marker, "layout": "kaggle"})
    return dst


def generate_synthetic(root: str | Path, num_images: int, seed: int = 0, layout: str = "original",
                       workers: int | None = None) -> Path:
    """Generate into ``root`` in ``layout`` (one of LAYOUTS); the entry point of the command-line script."""
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "original":
        return generate_celeba(root, num_images, seed, workers)
    _check_arguments(num_images, seed, workers)
    root = Path(root).expanduser()
    _make_dir(root.parent)
    # Render next to ``root`` (same file system, so the images are hard-linked, not copied), then convert.
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}.original-") as original:
        generate_celeba(original, num_images, seed, workers)
        return write_kaggle_layout(original, root)
