"""Face detection and CelebA alignment (faceattr.faces) and the face-aware preprocessing (images.load_faces).

Photos: two real portraits in the public domain, skimage's astronaut (NASA, 512x512) and matplotlib's Grace Hopper
(512x600); matplotlib's gift-box clip art and noise as pictures without a face; generated CelebA-format faces with
their landmark rows (the session's ``synthetic_root``). Known similarity transforms move a photo into a larger
canvas; the test maps what was found there back and compares.
"""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageOps

from faceattr.data.synthetic import celeba_files
from faceattr.errors import UserError
from faceattr.faces import (
    CELEBA_TEMPLATE,
    LANDMARK_FILES,
    LANDMARK_NAMES,
    Face,
    FaceDetector,
    Template,
    align_face,
    apply_transform,
    estimate_template,
    find_landmark_file,
    invert_transform,
    similarity_transform,
)
from faceattr.serve.images import ImageLimits, PixelBudget, load_and_preprocess, load_faces

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
GRAY = (128, 128, 128)
#: Where the portraits' landmarks are (pixels; checked by eye on a drawing of the detections).
EXPECTED = {
    "astronaut": [(204, 101), (246, 103), (224, 129), (202, 140), (245, 141)],
    "hopper": [(222, 193), (307, 188), (269, 240), (231, 278), (306, 275)],
}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def placement(size: tuple[int, int], scale: float, degrees: float, canvas: tuple[int, int], offset=(0, 0)):
    """The similarity transform (2x3, pixel indices) that scales a photo of ``size`` by ``scale``, rotates it by
    ``degrees`` (counter-clockwise on screen) about its centre and puts that centre at the canvas centre + offset."""
    angle = math.radians(degrees)
    linear = scale * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    target = np.array([(canvas[0] - 1) / 2 + offset[0], (canvas[1] - 1) / 2 + offset[1]])
    return np.concatenate([linear, (target - linear @ centre)[:, None]], axis=1)


def pillow_place(image: Image.Image, matrix: np.ndarray, canvas: tuple[int, int]) -> Image.Image:
    """``image`` moved by ``matrix`` onto a gray canvas with Pillow alone (bicubic; independent of faces.warp)."""
    inverse = invert_transform(matrix)
    shift = inverse[:, 2] + 0.5 - inverse[:, :2] @ np.array([0.5, 0.5])  # pixel indices -> Pillow's coordinates
    data = (inverse[0, 0], inverse[0, 1], shift[0], inverse[1, 0], inverse[1, 1], shift[1])
    return image.transform(canvas, Image.Transform.AFFINE, data, Image.Resampling.BICUBIC, fillcolor=GRAY)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def landmark_rows(root: Path) -> list[tuple[str, np.ndarray]]:
    lines = (root / celeba_files.LANDMARKS_FILE).read_text().splitlines()[2:]
    return [(line.split()[0], np.array(line.split()[1:], dtype=float).reshape(5, 2)) for line in lines]


def nme(found, reference) -> float:
    """Mean landmark distance as a fraction of the inter-ocular distance."""
    found, reference = np.asarray(found), np.asarray(reference)
    return float(np.linalg.norm(found - reference, axis=1).mean() / np.linalg.norm(reference[1] - reference[0]))


# --- the template -----------------------------------------------------------------------------------------------


def test_landmark_files_and_order_are_celebas():
    assert LANDMARK_FILES[0] == celeba_files.LANDMARKS_FILE
    assert celeba_files.LANDMARK_COLUMNS == tuple(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy")
    left, right, nose, left_mouth, right_mouth = CELEBA_TEMPLATE.points
    assert left[0] < nose[0] < right[0] and left_mouth[0] < right_mouth[0]  # "left" = the image's left
    assert left[1] < nose[1] < left_mouth[1]


def test_estimate_template_is_the_mean_of_the_landmark_rows(synthetic_root, tmp_path):
    rows = landmark_rows(synthetic_root)
    mean = np.mean([points for _, points in rows], axis=0)
    found = find_landmark_file(synthetic_root)
    assert found == synthetic_root / "list_landmarks_align_celeba.txt"
    template = estimate_template(found)
    np.testing.assert_allclose(template.points, mean, atol=1e-9)
    assert template.source == f"list_landmarks_align_celeba.txt ({len(rows)} faces)"

    kaggle = tmp_path / "kaggle"
    celeba_files.write_kaggle(synthetic_root, kaggle)
    csv_file = find_landmark_file(kaggle)
    assert csv_file == kaggle / "list_landmarks_align_celeba.csv"
    np.testing.assert_allclose(estimate_template(csv_file).points, mean, atol=1e-9)
    np.testing.assert_allclose(Template.from_dict(template.as_dict()).points, template.points, atol=1e-4)

    assert find_landmark_file(tmp_path) is None
    bad = tmp_path / "list_landmarks_align_celeba.txt"
    bad.write_text("1\nlefteye_x lefteye_y\n000001.jpg 1 2 3\n")
    with pytest.raises(UserError, match="line 3: expected an image name and 10 coordinates"):
        estimate_template(bad)


# --- alignment ---------------------------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_one():
    points = np.random.default_rng(0).uniform(0, 200, (5, 2))
    matrix = placement((178, 218), 1.7, -33, (400, 300), (12, -5))
    np.testing.assert_allclose(similarity_transform(points, apply_transform(matrix, points)), matrix, atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform([[1, 1]] * 5, CELEBA_TEMPLATE.points)


@pytest.mark.parametrize(
    ("scale", "degrees", "offset"),
    [
        (0.6, 0, (40, -30)),
        (1.0, 20, (0, 0)),
        (1.8, -20, (-90, 60)),
        (1.3, 8, (150, 120)),
        (0.75, -15, (-200, -150)),
        (2.6, 10, (0, 0)),  # shrunk back by 2.6: a 2x box reduction first; the canvas cuts the hair and chin
    ],
)
def test_alignment_undoes_a_similarity_transform(synthetic_root, scale, degrees, offset):
    """An aligned image moved into a canvas and aligned back with its own landmark row is the image again, but for
    the blur of two resamplings; the template moved by one pixel is measurably further from it."""
    for name, points in landmark_rows(synthetic_root)[:3]:
        original = Image.open(synthetic_root / "img_align_celeba" / name).convert("RGB")
        matrix = placement(original.size, scale, degrees, (640, 560), offset)
        placed = pillow_place(original, matrix, (640, 560))
        moved = apply_transform(matrix, points)
        interior = (slice(20, 198), slice(20, 158))
        reference = np.asarray(original, dtype=float)[interior]
        back = np.asarray(align_face(placed, moved, Template(tuple(map(tuple, points)), name)), dtype=float)
        shifted = np.asarray(align_face(placed, moved, Template(tuple(map(tuple, points + 1)), name)), dtype=float)
        assert back.shape == (218, 178, 3)
        error = np.abs(back[interior] - reference).mean()  # measured: 4.1-5.3 at scale 0.6, 1.5-3.5 above
        assert error < (6.5 if scale < 1 else 4.0), (name, error)
        assert np.abs(shifted[interior] - reference).mean() > error + 0.5


def test_align_face_repeats_the_edges_of_a_face_at_the_border(portraits):
    photo = portraits["astronaut"].crop((150, 60, 320, 200))  # the face fills the picture: the frame leaves it
    points = np.array(EXPECTED["astronaut"], dtype=float) - (150, 60)
    aligned = np.asarray(align_face(photo, points), dtype=int)
    pixels = np.asarray(photo, dtype=int)
    assert aligned.shape == (218, 178, 3)
    for row, col in ((0, 0), (0, -1), (-1, 0), (-1, -1)):  # the frame's corners are beyond the photo's corners
        assert np.abs(aligned[row, col] - pixels[row, col]).max() <= 8


# --- detection ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_detector_finds_the_portraits_face_and_its_landmarks(detector, portraits, name):
    faces = detector(portraits[name])
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face) and face.score > 0.9
    assert nme(face.landmarks, EXPECTED[name]) < 0.05
    x0, y0, x1, y1 = face.box
    assert all(x0 < x < x1 and y0 < y < y1 for x, y in face.landmarks)
    as_dict = face.as_dict()
    assert set(as_dict) == {"box", "landmarks", "score"} and len(as_dict["landmarks"]) == 5
    assert as_dict["landmarks"][0] == [round(face.landmarks[0][0], 1), round(face.landmarks[0][1], 1)]


#: (scale, degrees, offset, canvas size as a multiple of the scaled photo): shifts, scales 0.5-2, rotations +-20,
#: padding into a frame twice the photo's size.
TRANSFORMS = [
    (1.0, 0, (-60, 40), 1.5),
    (0.5, 0, (0, 0), 1.4),
    (2.0, 0, (0, 0), 1.2),
    (1.0, -20, (0, 0), 1.4),
    (1.0, 20, (30, -20), 1.4),
    (0.7, 12, (50, 50), 1.6),
    (1.6, -15, (-50, 50), 1.3),
    (1.0, 0, (0, 0), 2.0),
]


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_landmarks_follow_the_face_when_the_photo_moves(detector, portraits, name):
    photo = portraits[name]
    reference = detector(photo)[0].landmarks
    errors = []
    for scale, degrees, offset, room in TRANSFORMS:
        canvas = (round(photo.size[0] * scale * room), round(photo.size[1] * scale * room))
        matrix = placement(photo.size, scale, degrees, canvas, offset)
        faces = detector(pillow_place(photo, matrix, canvas))
        assert len(faces) == 1, (scale, degrees, offset)
        errors.append(nme(apply_transform(invert_transform(matrix), faces[0].landmarks), reference))
    assert max(errors) < 0.05 and np.mean(errors) < 0.03, errors


def test_no_face_no_detection(detector):
    gift = Image.open(SAMPLES / "Minduka_Present_Blue_Pack.png").convert("RGB")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    assert detector(gift) == [] and detector(noise) == [] and detector(Image.new("RGB", (5, 7))) == []


def group_photo(portraits) -> Image.Image:
    """Three faces of different sizes: Grace Hopper left and large, the astronaut in the middle and smallest, Grace
    Hopper mirrored on the right in between (face boxes of about 21,000, 2,600 and 4,400 pixels)."""
    canvas = Image.new("RGB", (960, 540), (90, 110, 130))
    hopper, astronaut = portraits["hopper"], portraits["astronaut"]
    canvas.paste(hopper.resize((400, 469), Image.Resampling.LANCZOS), (20, 40))
    canvas.paste(astronaut.resize((300, 300), Image.Resampling.LANCZOS), (440, 60))
    canvas.paste(ImageOps.mirror(hopper).resize((190, 223), Image.Resampling.LANCZOS), (760, 200))
    return canvas


def test_a_group_photo_gives_every_face_largest_first(detector, portraits):
    faces = detector(group_photo(portraits))
    assert len(faces) == 3
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True) and areas[0] > 3 * areas[1]
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
    assert 20 < centres[0][0] < 420 and 440 < centres[2][0] < 740 and centres[1][0] > 760  # where each was pasted


def test_the_detector_is_safe_to_share_between_threads(detector, portraits):
    photos = [portraits["astronaut"], portraits["hopper"]] * 3
    expected = [detector(photo) for photo in photos]
    results: dict[int, list[Face]] = {}
    threads = [threading.Thread(target=lambda i=i: results.update({i: detector(photos[i])})) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(6)] == expected


# --- load_faces --------------------------------------------------------------------------------------------------


def test_load_faces_without_a_detector_is_the_centre_crop(portraits):
    data = (SAMPLES / "grace_hopper.jpg").read_bytes()
    prepared = load_faces(data, (64, 64), (178, 178), ImageLimits())
    assert len(prepared) == 1 and prepared[0].face is None
    assert np.array_equal(prepared[0].pixels, load_and_preprocess(data, (64, 64), (178, 178)))


def test_load_faces_aligns_a_moved_face_like_the_aligned_upload(detector, synthetic_root):
    """A generated aligned face moved into a canvas: detection + alignment onto its own landmark row give nearly
    the model input of the aligned file itself, far closer than a centre crop of the canvas."""
    for name, points in landmark_rows(synthetic_root)[:40]:
        original = Image.open(synthetic_root / "img_align_celeba" / name).convert("RGB")
        matrix = placement(original.size, 1.4, 10, (480, 520), (-40, 30))
        data = encode(pillow_place(original, matrix, (480, 520)))
        template = Template(tuple(map(tuple, points)), name)
        prepared = load_faces(data, (64, 64), (178, 178), ImageLimits(), detector, template)
        if prepared:
            break
    else:
        pytest.fail("no generated face was detected")
    assert len(prepared) == 1 and prepared[0].face is not None
    direct = load_and_preprocess((synthetic_root / "img_align_celeba" / name).read_bytes(), (64, 64), (178, 178))
    centre = load_and_preprocess(data, (64, 64), (178, 178))
    assert prepared[0].pixels.shape == direct.shape and prepared[0].pixels.dtype == np.uint8
    aligned_error = np.abs(prepared[0].pixels.astype(float) - direct).mean()
    centre_error = np.abs(centre.astype(float) - direct).mean()
    assert aligned_error < 16 and aligned_error * 3 < centre_error, (aligned_error, centre_error)  # 12.6, 39.7


def test_load_faces_of_an_aligned_portrait_gives_its_pixels_back(detector, portraits):
    """A portrait aligned to CelebA's template, then moved: detection + alignment reproduce the aligned upload."""
    photo = portraits["hopper"]
    aligned = align_face(photo, detector(photo)[0].landmarks)
    direct = load_and_preprocess(encode(aligned), (64, 64), (178, 178))
    for scale, degrees, offset, room in TRANSFORMS[:4]:
        canvas = (round(photo.size[0] * scale * room), round(photo.size[1] * scale * room))
        data = encode(pillow_place(photo, placement(photo.size, scale, degrees, canvas, offset), canvas), "JPEG")
        prepared = load_faces(data, (64, 64), (178, 178), ImageLimits(), detector)
        assert len(prepared) == 1
        assert np.abs(prepared[0].pixels.astype(float) - direct).mean() < 10


def test_load_faces_without_a_face(detector):
    data = (SAMPLES / "Minduka_Present_Blue_Pack.png").read_bytes()
    assert load_faces(data, (64, 64), (178, 178), ImageLimits(), detector) == []
    centred = load_faces(data, (64, 64), (178, 178), ImageLimits(), detector, center_when_no_face=True)
    assert len(centred) == 1 and centred[0].face is None
    assert np.array_equal(centred[0].pixels, load_and_preprocess(data, (64, 64), (178, 178)))


def test_load_faces_of_a_group_photo(detector, portraits):
    data = encode(group_photo(portraits))
    largest = load_faces(data, (32, 32), None, ImageLimits(), detector)
    every = load_faces(data, (32, 32), None, ImageLimits(), detector, all_faces=True)
    assert len(largest) == 1 and len(every) == 3
    assert np.array_equal(largest[0].pixels, every[0].pixels) and largest[0].face == every[0].face
    assert all(p.pixels.shape == (3, 32, 32) for p in every)


def test_load_faces_holds_the_decoding_budget_during_detection(detector, portraits):
    budget = PixelBudget(10_000_000)
    seen = []

    def watching(image):
        seen.append(budget.in_use)
        return detector(image)

    data = encode(portraits["astronaut"])
    assert len(load_faces(data, (32, 32), None, ImageLimits(budget=budget), watching)) == 1
    assert seen == [512 * 512] and budget.in_use == 0


# --- the template travels with the model -------------------------------------------------------------------------


def test_export_writes_the_training_datas_template_or_the_built_in_one(synthetic_root, tmp_path):
    from omegaconf import OmegaConf

    from faceattr.attributes import CELEBA_ATTRIBUTES
    from faceattr.contract import ModelContract
    from faceattr.export.pipeline import _face_template
    from faceattr.run_finder import Resolved

    hparams = {"backbone": "test_resnet", "attributes": CELEBA_ATTRIBUTES, "image_size": [32, 32]}
    contract = ModelContract.from_hparams({**hparams, "mean": [0.5] * 3, "std": [0.5] * 3, "preprocess_rule": 2})

    def template(cfg: dict, resolved: Resolved) -> dict:
        """The face template export writes into the model's contract."""
        return _face_template(OmegaConf.create(cfg), resolved, contract).to_json()["face_template"]

    run = Resolved(tmp_path / "x.ckpt", None, "test", run_config={"data": {"root": str(synthetic_root)}})
    written = template({"data_root": None}, run)
    assert written == estimate_template(synthetic_root / "list_landmarks_align_celeba.txt").as_dict()
    assert written["source"].startswith("list_landmarks_align_celeba.txt (")
    elsewhere = template({"data_root": str(tmp_path)}, run)  # data_root= wins; no file
    assert (
        elsewhere
        == CELEBA_TEMPLATE.as_dict()
        == {
            "points": [[69.0, 111.5], [108.0, 111.5], [88.5, 135.0], [72.0, 152.0], [106.0, 152.0]],
            "source": "built-in CelebA mean",
        }
    )
    assert template({}, Resolved(tmp_path / "x.ckpt", None, "test")) == elsewhere
