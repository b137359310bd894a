"""Export: the three ckpt forms, TorchScript/ONNX parity, thresholds, the BentoML store, a torch-only consumer."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, cli_env, run_cli
from PIL import Image

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.errors import UserError
from faceattr.export.calibrate import check_run_config, f1_thresholds
from faceattr.export.resolve import resolve_checkpoint
from faceattr.serve.images import ImageError, ImageLimits, crop_box, decode_image, load_and_preprocess, preprocess


def compose_export(*overrides: str):
    """The export config as `python export.py <overrides>` would compose it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="export", overrides=list(overrides))


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """`python export.py ckpt=<run dir> export=onnx` into a fresh BENTOML_HOME: (run dir, tmp, stdout, store dir)."""
    tmp = tmp_path_factory.mktemp("export")
    proc = run_cli("export.py", f"ckpt={tiny_run}", "export=onnx", "calibration.num_workers=0", tmp_path=tmp)
    store = tmp / "bentoml" / "models" / "faceattr"
    return tiny_run, tmp, proc.stdout, store


def _stored_model(store: Path) -> Path:
    versions = [p for p in store.iterdir() if p.is_dir()]
    assert len(versions) == 1, versions
    return versions[0]


@pytest.mark.slow
def test_run_dir_export_writes_both_formats_with_parity_and_metadata(exported):
    run_dir, tmp, stdout, store = exported
    record = json.loads((run_dir / "run.json").read_text())
    assert f"checkpoint:  {record['best_checkpoint']}" in stdout
    assert "from run.json" in stdout
    # Artefacts in the run dir, and the same files in the BentoML store.
    for name in ("model.pt", "model.onnx", "faceattr.json", "config.yaml"):
        assert (run_dir / "export" / name).is_file(), name
    model_dir = _stored_model(store)
    assert (model_dir / "model.pt").read_bytes() == (run_dir / "export" / "model.pt").read_bytes()
    meta = json.loads((model_dir / "faceattr.json").read_text())
    assert meta["attributes"] == list(CELEBA_ATTRIBUTES)
    assert meta["image_size"] == [32, 32] and meta["crop"] == [178, 178]
    assert meta["backbone"] == "test_resnet"
    assert meta["source"]["checkpoint"] == str(Path(record["best_checkpoint"]).resolve())
    assert set(meta["formats"]) == {"torchscript", "onnx"}
    for fmt in ("torchscript", "onnx"):
        parity = meta["parity"][fmt]
        assert parity["max_abs_diff"] <= 1e-4 and "validation images" in parity["images"], parity
    thresholds = meta["thresholds"]
    assert list(thresholds) == list(CELEBA_ATTRIBUTES)
    assert all(0.0 < t < 1.0 for t in thresholds.values())
    assert "F1-optimal" in meta["threshold_method"]
    assert meta["metrics"]["validation"]["num_images"] > 0 and "auroc" in meta["metrics"]["validation"]
    assert meta["metrics"]["test"]["test/auroc"] == pytest.approx(record["test"]["test/auroc"])
    # BentoML's own view of the model: `bentoml models list` and the metadata of model.yaml.
    listing = subprocess.run([sys.executable, "-m", "bentoml", "models", "list"], env=cli_env(tmp),
                             capture_output=True, text=True, check=True).stdout
    assert f"faceattr:{model_dir.name}" in listing
    info = yaml.safe_load((model_dir / "model.yaml").read_text())
    assert info["metadata"]["thresholds"] == thresholds
    assert info["metadata"]["backbone"] == "test_resnet" and "config" in info["metadata"]
    assert info["labels"]["formats"] == "torchscript+onnx"


@pytest.mark.slow
def test_torchscript_runs_in_a_process_that_cannot_import_faceattr(exported, tmp_path):
    """The artefact alone, torch alone: faceattr imports are blocked in the child; outputs match the checkpoint."""
    run_dir, _, _, store = exported
    from faceattr.export.build import load_module

    model_pt = _stored_model(store) / "model.pt"
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(images, tmp_path / "in.pt")
    script = textwrap.dedent(
        f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "faceattr" or name.startswith("faceattr."):
                    raise ImportError("faceattr must not be imported here")
        sys.meta_path.insert(0, Block())
        import torch
        extra = {{"faceattr.json": ""}}
        model = torch.jit.load({str(model_pt)!r}, _extra_files=extra)
        out = model(torch.load({str(tmp_path / 'in.pt')!r}))
        torch.save(out, {str(tmp_path / 'out.pt')!r})
        meta = json.loads(extra["faceattr.json"])
        print(json.dumps({{"shape": list(out.shape), "attributes": len(meta["attributes"]),
                          "faceattr_loaded": any(m.startswith("faceattr") for m in sys.modules)}}))
        """
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"shape": [5, 40], "attributes": 40, "faceattr_loaded": False}
    record = json.loads((run_dir / "run.json").read_text())
    module = load_module(Path(record["best_checkpoint"]))
    with torch.no_grad():
        expected = torch.sigmoid(module(images))
    assert (torch.load(tmp_path / "out.pt") - expected).abs().max() <= 1e-5


@pytest.mark.slow
def test_onnx_matches_the_checkpoint_with_onnxruntime(exported):
    import onnxruntime as ort

    from faceattr.export.build import load_module

    run_dir, _, _, store = exported
    model_dir = _stored_model(store)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    module = load_module(Path(json.loads((run_dir / "run.json").read_text())["best_checkpoint"]))
    for n in (1, 7):
        images = np.random.default_rng(n).random((n, 3, 32, 32), dtype=np.float32)
        out = session.run(None, {"images": images})[0]
        assert out.shape == (n, 40)
        with torch.no_grad():
            expected = torch.sigmoid(module(torch.from_numpy(images))).numpy()
        assert np.abs(out - expected).max() <= 1e-4
    meta = json.loads(session.get_modelmeta().custom_metadata_map["faceattr.json"])
    assert meta["attributes"] == list(CELEBA_ATTRIBUTES)


@pytest.mark.slow
def test_checkpoint_file_form(tiny_run, tmp_path):
    from faceattr.export.pipeline import export

    last = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose_export(f"ckpt={last}", "store=false", f"output_dir={tmp_path}", "calibration.num_workers=0")
    meta = export(cfg)
    assert meta["source"]["checkpoint"] == str(last.resolve())
    assert meta["source"]["picked"] == "checkpoint file given"
    assert meta["parity"]["torchscript"]["max_abs_diff"] <= 1e-4
    assert (tmp_path / "model.pt").is_file() and not (tmp_path / "model.onnx").exists()


def _fake_sweep(tiny_run: Path, root: Path, scores: list[float | None]) -> Path:
    """A sweep dir whose jobs are copies of the tiny run with the given best scores (None = a failed job)."""
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for number, score in enumerate(scores):
        job = sweep / str(number)
        if score is None:
            job.mkdir()
            (job / "run.json").write_text(json.dumps({"status": "failed", "monitor": "val/auroc"}))
            continue
        shutil.copytree(tiny_run, job, ignore=shutil.ignore_patterns("export", "tensorboard"))
        record = json.loads((job / "run.json").read_text())
        record["best_score"] = score
        record["best_checkpoint"] = str(job / "checkpoints" / Path(record["best_checkpoint"]).name)
        (job / "run.json").write_text(json.dumps(record))
    return sweep


@pytest.mark.slow
def test_sweep_dir_form_picks_the_best_job_and_says_why(tiny_run, tmp_path, capsys):
    from faceattr.export.pipeline import export

    sweep = _fake_sweep(tiny_run, tmp_path, [0.61, 0.83, None, 0.70])
    resolved = resolve_checkpoint(sweep)
    assert resolved.run_dir == sweep / "1"
    assert "job 1 of 4 has the best val/auroc (max) = 0.8300" in resolved.reason
    assert "2: failed" in resolved.reason and "0: 0.6100" in resolved.reason
    meta = export(compose_export(f"ckpt={sweep}", "store=false", "calibration.num_workers=0"))
    assert meta["source"]["checkpoint"].startswith(str((sweep / "1").resolve()))
    assert (sweep / "1" / "export" / "model.pt").is_file()
    assert "job 1 of 4" in capsys.readouterr().out


@pytest.mark.slow
def test_run_dir_without_run_json_falls_back_to_checkpoint_state(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "tensorboard"))
    best = json.loads((run / "run.json").read_text())["best_checkpoint"]
    (run / "run.json").unlink()
    resolved = resolve_checkpoint(run)
    assert resolved.checkpoint == run / "checkpoints" / Path(best).name  # relocated into the moved run dir
    assert "ModelCheckpoint state in last.ckpt" in resolved.reason


@pytest.mark.slow
def test_bad_ckpt_arguments_are_one_line_user_errors(tmp_path, tiny_run):
    with pytest.raises(UserError, match="no such file or directory"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoints"):
        resolve_checkpoint(tmp_path / "empty")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(UserError, match=r"has no checkpoints .*status: failed"):
        resolve_checkpoint(run)
    proc = run_cli("export.py", f"ckpt={tmp_path / 'nope'}", tmp_path=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: ckpt={tmp_path / 'nope'}: no such file or directory"]


@pytest.mark.slow
def test_mismatched_run_config_is_refused(tiny_run):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    hparams = {"image_size": [32, 32], "crop": [178, 178], "attributes": list(CELEBA_ATTRIBUTES),
               "backbone": "test_resnet"}
    check_run_config(hparams, config, "config.yaml")  # the run's own config matches
    config["data"]["image_size"] = 64
    with pytest.raises(UserError, match=r"does not match config.yaml \(data.image_size \[64, 64\] vs \[32, 32\]\)"):
        check_run_config(hparams, config, "config.yaml")


@pytest.mark.slow
def test_parity_failure_fails_loudly_and_stores_nothing(tiny_run, tmp_path, monkeypatch):
    from faceattr.export.pipeline import export

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    cfg = compose_export(f"ckpt={tiny_run}", "parity.atol=-1", f"output_dir={tmp_path}", "calibration.num_workers=0")
    with pytest.raises(UserError, match="parity check failed for torchscript: .* NOT saved to the model store"):
        export(cfg)
    assert not (tmp_path / "bentoml" / "models").exists()


def test_thresholds_maximize_f1_and_default_where_undefined():
    probs = torch.tensor([[0.9, 0.2], [0.8, 0.3], [0.4, 0.1], [0.3, 0.6], [0.1, 0.7]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.uint8)
    thresholds, calibrated = f1_thresholds(probs, labels, default=0.5)
    # Attribute 0: top-2 (P=2/2, R=2/3, F1=0.8) vs top-4 (F1=0.857): the best cut is between 0.3 and 0.1.
    assert thresholds[0].item() == pytest.approx(0.2)
    assert calibrated.tolist() == [True, False] and thresholds[1].item() == 0.5


# --- preprocessing (shared by the service and export) --------------------------------------------------------


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **kwargs)
    return buffer.getvalue()


@pytest.mark.slow
def test_preprocessing_of_aligned_images_equals_training(synthetic_root):
    from faceattr.data import CelebADataModule

    datamodule = CelebADataModule(root=str(synthetic_root), image_size=32, crop=178, num_workers=0)
    datamodule.setup()
    split = datamodule.splits["valid"]
    for index in range(4):
        expected, _ = split[index]
        data = Path(split.path(index)).read_bytes()
        assert torch.equal(load_and_preprocess(data, (32, 32), (178, 178)), expected)


def test_crop_box_maps_the_training_crop_into_any_photo():
    assert crop_box(218, 178, (178, 178)) == (178, 178)  # aligned: exactly training's crop
    assert crop_box(436, 356, (178, 178)) == (356, 356)  # same frame at twice the size
    assert crop_box(200, 400, (178, 178)) == (163, 163)  # wide: frame = full height
    assert crop_box(1000, 300, (178, 178)) == (300, 300)  # tall: frame = full width
    assert crop_box(218, 178, None) == (218, 178)
    out = preprocess(torch.zeros(3, 123, 457, dtype=torch.uint8), (32, 32), (178, 178))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_decoding_handles_modes_orientation_and_bad_input():
    photo = Image.new("RGB", (60, 40), (200, 30, 30))
    gray = decode_image(_jpeg(photo.convert("L")))
    assert gray.shape == (3, 40, 60) and torch.equal(gray[0], gray[1])
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    png = io.BytesIO()
    rgba.save(png, "PNG")
    assert decode_image(png.getvalue()).min() == 255  # transparent -> white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert decode_image(_jpeg(photo, exif=exif)).shape == (3, 60, 40)
    palette = io.BytesIO()
    photo.convert("P").save(palette, "PNG")
    assert decode_image(palette.getvalue()).shape == (3, 40, 60)
    deep = io.BytesIO()
    Image.fromarray(np.full((5, 5), 65535, dtype=np.uint16)).save(deep, "PNG")
    assert decode_image(deep.getvalue()).max() == 255
    gif = io.BytesIO()
    photo.save(gif, "GIF")
    with pytest.raises(ImageError, match="not an image of a supported format"):
        decode_image(gif.getvalue())
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    noisy = _jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(noisy[: len(noisy) * 2 // 3])
    with pytest.raises(ImageError) as too_big:
        decode_image(_jpeg(photo), ImageLimits(max_pixels=1000))
    assert too_big.value.status == 413
