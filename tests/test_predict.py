"""Batch prediction (predict.py, faceattr/prediction.py), in-process: the tiny run's export on a folder of mixed
photos: one CSV row per photo (per face with all_faces), the service's preprocessing and artefact, every photo not
answered listed with its reason, and one-line errors."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from serve_process import SAMPLES, exported_model, probe_model

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.config.command_line import check_command_line
from faceattr.config.schemas import CONFIG_DIRS
from faceattr.errors import UserError
from faceattr.layout import EXPORT_DIR
from faceattr.prediction import FACE_COLUMNS, PRESENT_SEPARATOR, predict_images, skipped_path, summary_lines
from faceattr.serve.runtime import read_model_info

pytestmark = pytest.mark.slow  # the fixture is the tiny run's export (a CLI run, shared with the serving tests)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def group_photo() -> bytes:
    """Three copies of the Grace Hopper portrait, of different sizes, side by side on one canvas."""
    hopper = Image.open(SAMPLES / "grace_hopper.jpg").convert("RGB")
    canvas = Image.new("RGB", (780, 400), (200, 200, 200))
    for i, width in enumerate((250, 200, 160)):
        canvas.paste(hopper.resize((width, round(width * hopper.height / hopper.width))), (i * 260, 20))
    return encode(canvas, "JPEG", quality=90)


@pytest.fixture(scope="module")
def export_run(tiny_run) -> Path:
    """The tiny run, exported (its export/ folder; the BentoML store of the export is another process's)."""
    exported_model(tiny_run)
    assert (tiny_run / EXPORT_DIR / "faceattr.json").is_file()
    return tiny_run


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    hopper = (SAMPLES / "grace_hopper.jpg").read_bytes()
    (folder / "hopper.jpg").write_bytes(hopper)
    (folder / "gift.png").write_bytes((SAMPLES / "Minduka_Present_Blue_Pack.png").read_bytes())
    (folder / "group.jpg").write_bytes(group_photo())
    (folder / "cut.jpg").write_bytes(hopper[: len(hopper) // 2])  # truncated
    (folder / "random.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "more").mkdir()
    (folder / "more" / "gray.webp").write_bytes(encode(Image.open(SAMPLES / "grace_hopper.jpg").convert("L"), "WEBP"))
    return folder


def config(**values):
    cfg = OmegaConf.load(CONFIG_DIRS["predict"] / "predict.yaml")
    for key in ("defaults", "hydra"):
        cfg.pop(key)
    cfg.merge_with(values)
    return cfg


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_folder_gives_one_row_per_photo_and_lists_the_others(export_run, photos, tmp_path):
    out = tmp_path / "preds.csv"
    summary = predict_images(config(model=str(export_run), images=str(photos), out=str(out), batch_size=2))
    rows = read_csv(out)
    assert [r["path"] for r in rows] == ["gift.png", "group.jpg", "hopper.jpg", "more/gray.webp"]
    assert list(rows[0]) == ["path", "face", *FACE_COLUMNS, *CELEBA_ATTRIBUTES, "present"]
    assert all(r["face"] == "0" and all(r[c] == "" for c in FACE_COLUMNS) for r in rows)  # centre crops
    skipped = {r["path"]: r["reason"] for r in read_csv(skipped_path(out))}
    assert set(skipped) == {"cut.jpg", "random.png"}
    assert "truncated or corrupt" in skipped["cut.jpg"] and "not an image" in skipped["random.png"]
    assert (summary["photos"], summary["answered"], summary["faces"], summary["skipped"]) == (6, 4, 4, 2)
    assert summary["other_files"] == 1  # notes.txt
    printed = "\n".join(summary_lines(summary))
    assert "6 (4 answered, 2 skipped)" in printed and "truncated or corrupt" in printed

    # The reference, computed without faceattr: Pillow's preprocessing of the 512x600 portrait for the tiny model
    # (32x32, crop 178, jpeg_scaling), worked out by hand, and the exported TorchScript file run by torch itself.
    info = read_model_info(export_run / EXPORT_DIR, "export")
    assert (info.image_size, info.crop, info.jpeg_scaling) == ((32, 32), (178, 178), True)
    with Image.open(photos / "hopper.jpg") as portrait:
        # Aligned frame: the full height (600 rows > 512 * 218/178); crop 178 -> 490 pixels, 490/8 >= 32: the JPEG
        # is decoded at 1/8, 64x75, where the crop is 61x61 (75 * 178/218), centred: 2 columns left, 7 rows above.
        portrait.draft("RGB", (512 // 8, 600 // 8))
        assert portrait.size == (64, 75)
        pixels = np.asarray(portrait.convert("RGB").crop((2, 7, 63, 68)).resize((32, 32), Image.BILINEAR))
    artefact = torch.jit.load(str(info.artefact("torchscript"))).eval()
    with torch.no_grad():
        expected = artefact(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    hopper = rows[2]
    assert np.abs(np.array([float(hopper[a]) for a in CELEBA_ATTRIBUTES]) - expected).max() <= 1e-6
    thresholds = info.contract.threshold_of()
    clear = [a for a, p in zip(CELEBA_ATTRIBUTES, expected) if abs(p - thresholds[a]) > 1e-5]
    assert {a for a in clear if a in hopper["present"].split(PRESENT_SEPARATOR)} == {
        a for a, p in zip(CELEBA_ATTRIBUTES, expected) if a in clear and p >= thresholds[a]
    }


def test_detect_gives_a_row_per_face_and_the_no_face_policy(export_run, photos, tmp_path):
    out = tmp_path / "faces.csv"
    glob = f"{photos}/*.*g"  # hopper.jpg, gift.png, group.jpg, cut.jpg, random.png
    summary = predict_images(config(model=str(export_run), images=glob, out=str(out), face="detect", all_faces=True))
    rows = read_csv(out)
    by_photo = {}
    for row in rows:
        by_photo.setdefault(Path(row["path"]).name, []).append(row)
    assert sorted(by_photo) == ["group.jpg", "hopper.jpg"]
    group = by_photo["group.jpg"]
    assert [r["face"] for r in group] == ["0", "1", "2"]
    widths = [float(r["face_x1"]) - float(r["face_x0"]) for r in group]
    assert widths == sorted(widths, reverse=True) and float(group[0]["face_score"]) > 0.9  # largest first
    skipped = {Path(r["path"]).name: r["reason"] for r in read_csv(skipped_path(out))}
    assert skipped["gift.png"].startswith("no face found") and set(skipped) == {"gift.png", "cut.jpg", "random.png"}
    assert summary["faces"] == 4

    out = tmp_path / "center.csv"
    predict_images(config(model=str(export_run), images=glob, out=str(out), face="detect", no_face="center"))
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert sorted(rows) == ["gift.png", "group.jpg", "hopper.jpg"]  # the largest face of the group only
    assert rows["gift.png"]["face_x0"] == "" and rows["hopper.jpg"]["face_x0"] != ""


def test_the_csv_carries_the_models_attribute_names_and_face_auto_is_the_models_own(photos, tmp_path):
    """A model whose attribute names came from a data=folder CSV (spaces, unicode, a comma and quotes), trained on
    detector-aligned faces: the CSV has a column per name as the model names it (UTF-8, quoted where CSV needs it),
    ``present`` lists them unambiguously, and face=auto (predict.yaml's default) detects faces, as the service does
    for that model."""
    names = ("Brille auf", "Lächeln", "黒髪", 'Hair "long", curly')
    folder = probe_model(tmp_path / "export", names, face_alignment="detect")
    out = tmp_path / "names.csv"
    summary = predict_images(config(model=str(folder), images=str(photos), out=str(out)))
    assert summary["face"] == "detect"
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "face", *FACE_COLUMNS, *names, "present"]
    assert {r["path"] for r in rows} == {"group.jpg", "hopper.jpg", "more/gray.webp"}  # the gift has no face
    assert all(r["face_x0"] != "" for r in rows)
    for row in rows:
        expected = [name for name in names if float(row[name]) >= 0.5]
        assert (row["present"].split(PRESENT_SEPARATOR) if row["present"] else []) == expected
    assert any(row["present"] for row in rows)
    with pytest.raises(UserError, match="all_faces=true needs face=detect"):
        centred = probe_model(tmp_path / "centred", names)  # CelebA-aligned: auto is center
        predict_images(config(model=str(centred), images=str(photos), out=str(tmp_path / "x.csv"), all_faces=True))


def test_mistakes_are_one_line(export_run, photos, tmp_path):
    run_without_export = tmp_path / "run"
    shutil.copytree(export_run, run_without_export, ignore=shutil.ignore_patterns(EXPORT_DIR, "tensorboard"))
    cases = [
        ({"model": str(run_without_export)}, "no export of", "run `python export.py ckpt="),
        ({"model": str(tmp_path / "nowhere.ckpt")}, "no such file or folder", ""),
        ({"model": "nosuchmodel"}, "no model 'nosuchmodel' in the BentoML model store", "export.py"),
        ({"images": str(tmp_path / "none")}, "no such folder", ""),
        ({"images": f"{photos}/*.gif"}, "matches no file", ""),
        ({"all_faces": True}, "all_faces=true needs face=detect", ""),
    ]
    for values, message, hint in cases:
        cfg = config(**{"model": str(export_run), "images": str(photos), "out": str(tmp_path / "x.csv"), **values})
        with pytest.raises(UserError) as error:
            predict_images(cfg)
        assert message in str(error.value) and hint in str(error.value) and "\n" not in str(error.value), values
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(UserError, match=r"^face='sideways': expected auto, center or detect$"):
        check_command_line("predict", ["model=m", "images=i", "face=sideways"])
    with pytest.raises(UserError, match=r"^unknown predict option 'ckpt'"):
        check_command_line("predict", ["model=m", "images=i", "ckpt=x"])


def test_a_moved_portrait_keeps_its_predictions_with_detect(export_run, tmp_path):
    """The portrait shifted, scaled and rotated inside larger frames: with face=detect its 40 probabilities move far
    less than with face=center, and stay within the invariance measured on real photos (docs/serving.md, Faces:
    detection and alignment: mean |delta p| 0.019, at most 0.042 per photo)."""
    hopper = Image.open(SAMPLES / "grace_hopper.jpg").convert("RGB")
    folder = tmp_path / "moved"
    folder.mkdir()
    (folder / "0_original.jpg").write_bytes(encode(hopper, "JPEG", quality=95))
    for number, (scale, degrees, x, y) in enumerate([(0.6, 0, 40, 300), (1.5, 0, 300, 60), (0.8, 15, 500, 420)]):
        moved = hopper.resize((round(hopper.width * scale), round(hopper.height * scale)))
        moved = moved.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(120, 130, 140))
        canvas = Image.new("RGB", (1300, 1200), (120, 130, 140))
        canvas.paste(moved, (x, y))
        (folder / f"{number + 1}_moved.jpg").write_bytes(encode(canvas, "JPEG", quality=95))

    def moves(face: str) -> list[float]:
        out = tmp_path / f"{face}.csv"
        predict_images(config(model=str(export_run), images=str(folder), out=str(out), face=face))
        rows = [np.array([float(row[a]) for a in CELEBA_ATTRIBUTES]) for row in read_csv(out)]
        assert len(rows) == 4
        return [float(np.abs(row - rows[0]).mean()) for row in rows[1:]]

    detect, center = moves("detect"), moves("center")
    assert max(detect) <= 0.042, detect
    assert sum(detect) < 0.5 * sum(center), (detect, center)
