"""The attribute model: CelebA-like labels with CelebA-like rates and correlations, and the data set's layout.

Two levels. An identity fixes sex, age, skin tone, hair colour, baldness, nose, eye and face shape; each image then
draws hair style, expression, make-up, facial hair (men only), accessories and blur, conditioned on the identity
(lipstick and make-up almost only on women, mouth opening and high cheekbones tied to smiling, double chin to
chubbiness, ...). ``No_Beard`` is exactly "no 5 o'clock shadow, goatee, mustache or full beard", and
``Attractive`` is a noisy score of youth, sex, make-up, chubbiness, bags, baldness and blur. A label is only set
when its cue is visible (a hat hides baldness and a receding hairline; bangs hide the hairline).

Like CelebA, partitions are contiguous index ranges (~80/10/10) and identity-disjoint; each identity has a few
(1-6) images scattered within its partition.

Every draw comes from its own ``numpy.random.default_rng([seed, stream, index])``, so the output does not depend
on the order or the process images are made in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceattr.attributes import CELEBA_ATTRIBUTES

# Independent random streams: default_rng([seed, stream, index]).
LAYOUT_STREAM, IDENTITY_STREAM, IMAGE_STREAM, RENDER_STREAM = range(4)
_PARTITION_FRACTIONS = (0.098, 0.099)  # valid, test (CelebA: 19867 and 19962 of 202599)
_MAX_IMAGES_PER_IDENTITY = 6

RGB = tuple[int, int, int]

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


def bernoulli(rng: np.random.Generator, p: float) -> bool:
    """True with probability ``p``."""
    return bool(rng.random() < p)


def jitter(rng: np.random.Generator, rgb: RGB, amount: int) -> RGB:
    """``rgb`` with each channel moved by a uniform integer in [-amount, amount], clipped to 0..255."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _sample_hair_color(rng: np.random.Generator, male: bool, young: bool) -> str:
    if bernoulli(rng, 0.012 if young else 0.17):
        return "gray"
    names = ("black", "blond", "brown", "other")
    weights = (0.31, 0.05, 0.19, 0.45) if male else (0.22, 0.28, 0.25, 0.25)
    return names[int(rng.choice(4, p=weights))]


def _sample_skin(rng: np.random.Generator, pale: bool) -> RGB:
    if pale:
        return jitter(rng, _SKIN_PALE, 4)
    t = rng.random() ** 1.4  # mostly light to medium
    return jitter(rng, tuple(round(a + (b - a) * t) for a, b in zip(_SKIN_LIGHT, _SKIN_DARK)), 6)


def _sample_identity(rng: np.random.Generator) -> _Identity:
    male = bernoulli(rng, 0.42)
    young = bernoulli(rng, 0.66 if male else 0.85)
    pale = bernoulli(rng, 0.025 if male else 0.06)
    bald = male and bernoulli(rng, 0.02 if young else 0.2)
    receding_rate = {(True, True): 0.08, (True, False): 0.3, (False, True): 0.03, (False, False): 0.1}
    receding = not bald and bernoulli(rng, receding_rate[male, young])
    hair_color = _sample_hair_color(rng, male, young)
    big_nose = bernoulli(rng, 0.38 if male else 0.13)
    chubby = bernoulli(rng, (0.035 if young else 0.16) * (1.3 if male else 0.8))
    return _Identity(
        male=male,
        young=young,
        pale=pale,
        bald=bald,
        receding=receding,
        hair_color=hair_color,
        bushy_brows=bernoulli(rng, 0.26 if male else 0.06),
        big_nose=big_nose,
        pointy_nose=not big_nose and bernoulli(rng, 0.2 if male else 0.44),
        narrow_eyes=bernoulli(rng, 0.115),
        chubby=chubby,
        oval=not chubby and bernoulli(rng, 0.2 if male else 0.36),
        skin=_sample_skin(rng, pale),
        hair=jitter(rng, _HAIR_PALETTE[hair_color][int(rng.integers(2))], 8),
        iris=_IRIS_PALETTE[int(rng.integers(len(_IRIS_PALETTE)))],
    )


def _attractive(a: dict[str, bool], rng: np.random.Generator) -> bool:
    score = (
        1.6 * a["Young"]
        + 0.2 * (not a["Male"])
        + 0.4 * a["Heavy_Makeup"]
        + 0.3 * a["Smiling"]
        - 1.3 * a["Chubby"]
        - 0.8 * a["Bags_Under_Eyes"]
        - 1.0 * a["Bald"]
        - 0.5 * a["Double_Chin"]
        - 0.6 * a["Blurry"]
        - 0.4 * a["Eyeglasses"]
        - 0.4 * a["Big_Nose"]
        + rng.normal(0.0, 0.35)
    )
    return score > 1.5


def _sample_image_attributes(ident: _Identity, rng: np.random.Generator) -> tuple[dict[str, bool], bool]:
    """Return (all 40 labels, full beard) of one image of ``ident``."""
    male, young = ident.male, ident.young
    hat = bernoulli(rng, 0.05)
    bangs = not ident.bald and bernoulli(rng, 0.08 if male else 0.21)
    texture = (
        "none"
        if ident.bald
        else rng.choice(("wavy", "straight", "none"), p=(0.13, 0.13, 0.74) if male else (0.5, 0.28, 0.22))
    )
    smiling = bernoulli(rng, 0.48)
    makeup = bernoulli(rng, 0.01 if male else 0.66)
    lipstick = bernoulli(rng, (0.5 if makeup else 0.003) if male else (0.97 if makeup else 0.55))
    shadow = male and bernoulli(rng, 0.25)
    goatee = male and bernoulli(rng, 0.15)
    mustache = male and bernoulli(rng, 0.45 if goatee else 0.04)
    full_beard = male and bernoulli(rng, 0.08)
    chubby = ident.chubby
    a = {
        "5_o_Clock_Shadow": shadow,
        "Arched_Eyebrows": bernoulli(rng, 0.06 if male else 0.4),
        "Bags_Under_Eyes": bernoulli(rng, (0.45 if not young else 0.13) + (0.05 if male else 0.0)),
        "Bald": ident.bald and not hat,
        "Bangs": bangs,
        "Big_Lips": bernoulli(rng, 0.16 if male else 0.3),
        "Big_Nose": ident.big_nose,
        "Black_Hair": ident.hair_color == "black",
        "Blond_Hair": ident.hair_color == "blond",
        "Blurry": bernoulli(rng, 0.05),
        "Brown_Hair": ident.hair_color == "brown",
        "Bushy_Eyebrows": ident.bushy_brows,
        "Chubby": chubby,
        "Double_Chin": bernoulli(rng, 0.5 if chubby else 0.02),
        "Eyeglasses": bernoulli(rng, 0.1 if male else 0.04),
        "Goatee": goatee,
        "Gray_Hair": ident.hair_color == "gray",
        "Heavy_Makeup": makeup,
        "High_Cheekbones": bernoulli(rng, 0.75 if smiling else 0.17),
        "Male": male,
        "Mouth_Slightly_Open": bernoulli(rng, 0.7 if smiling else 0.27),
        "Mustache": mustache,
        "Narrow_Eyes": ident.narrow_eyes,
        "No_Beard": not (shadow or goatee or mustache or full_beard),
        "Oval_Face": ident.oval,
        "Pale_Skin": ident.pale,
        "Pointy_Nose": ident.pointy_nose,
        "Receding_Hairline": ident.receding and not (hat or bangs),
        "Rosy_Cheeks": bernoulli(rng, 0.015 if male else (0.13 if makeup else 0.04)),
        "Sideburns": male and bernoulli(rng, 0.35 if (goatee or full_beard) else 0.07),
        "Smiling": smiling,
        "Straight_Hair": texture == "straight",
        "Wavy_Hair": texture == "wavy",
        "Wearing_Earrings": bernoulli(rng, 0.02 if male else 0.3),
        "Wearing_Hat": hat,
        "Wearing_Lipstick": lipstick,
        "Wearing_Necklace": bernoulli(rng, 0.01 if male else 0.2),
        "Wearing_Necktie": bernoulli(rng, 0.16 if male else 0.005),
        "Young": young,
    }
    a["Attractive"] = _attractive(a, rng)
    return {name: a[name] for name in CELEBA_ATTRIBUTES}, full_beard


def sample_face(seed: int, index: int, identity: int) -> FaceSpec:
    """The labels and appearance of image ``index`` (0-based) of person ``identity`` for ``seed``."""
    ident = _sample_identity(np.random.default_rng([seed, IDENTITY_STREAM, identity]))
    attributes, full_beard = _sample_image_attributes(ident, np.random.default_rng([seed, IMAGE_STREAM, index]))
    return FaceSpec(attributes, full_beard, ident.skin, ident.hair, ident.iris)


def _partition_sizes(num_images: int) -> tuple[int, int, int]:
    if num_images < 3:
        return num_images, 0, 0
    valid, test = (max(1, round(num_images * fraction)) for fraction in _PARTITION_FRACTIONS)
    return num_images - valid - test, valid, test


def assign_layout(seed: int, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (partition, identity) per image: contiguous partitions, identities disjoint across partitions."""
    rng = np.random.default_rng([seed, LAYOUT_STREAM, 0])
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
