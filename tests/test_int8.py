"""export.quantize=int8 (issue 23): the int8 ONNX artefact beside the fp32 one, its measured cost in the contract, the
metadata and the card, the refusal above quantize.max_auroc_drop, and the service choosing it on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_export import compose_export

from faceattr.contract import read_contract
from faceattr.errors import UserError
from faceattr.layout import ARTEFACT_FILES, METADATA_FILE, MODEL_CARD_FILE


def _export(ckpt, out: Path, *overrides: str) -> dict:
    """export.py's pipeline in process with export=onnx export.quantize=int8, into a fresh model store under ``out``."""
    from faceattr.export.pipeline import export

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        cfg = compose_export(
            f"ckpt={ckpt}",
            f"output_dir={out / 'export'}",
            "calibration.num_workers=0",
            "export=onnx",
            "export.quantize=int8",
            *overrides,
        )
        return export(cfg)


@pytest.fixture(scope="module")
def quantized(tiny_run, tmp_path_factory):
    """The tiny run exported with an int8 artefact: (metadata, tmp folder); removed from the store afterwards."""
    import bentoml

    out = tmp_path_factory.mktemp("int8")
    meta = _export(tiny_run, out, "quantize.max_auroc_drop=1")
    yield meta, out
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        bentoml.models.delete(meta["tag"])


def test_int8_export_writes_both_artefacts_and_records_its_cost(quantized):
    import bentoml

    meta, out = quantized
    folder = out / "export"
    assert meta["formats"] == {"torchscript": "model.pt", "onnx": "model.onnx", "onnx_int8": "model.int8.onnx"}
    fp32, int8 = folder / ARTEFACT_FILES["onnx"], folder / ARTEFACT_FILES["onnx_int8"]
    assert fp32.is_file() and int8.is_file() and int8.stat().st_size < fp32.stat().st_size

    on_disk = json.loads((folder / METADATA_FILE).read_text())
    contract = read_contract(on_disk, "the export")
    figures = contract.int8
    assert figures is not None and figures.artefact == "model.int8.onnx"
    assert figures.test_images == meta["metrics"]["test"]["num_images"] > 0
    assert figures.calibration_images > 0
    assert figures.auroc_drop == pytest.approx(figures.auroc_fp32 - figures.auroc_int8, abs=2e-6)
    # The fp32 ONNX artefact's figures are the served model's test figures (the same images, rule and thresholds).
    assert figures.auroc_fp32 == pytest.approx(meta["metrics"]["test"]["auroc"], abs=1e-4)
    assert figures.acc_fp32 == pytest.approx(meta["metrics"]["test"]["at_thresholds"]["acc"], abs=1e-4)
    assert len(figures.acc_change) == len(contract.attributes)
    assert 0 < figures.max_abs_delta_p < 0.5  # quantized: not identical, and still the same model
    assert on_disk["contract"]["int8"]["acc_change"].keys() == set(contract.attributes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        stored = bentoml.models.get(meta["tag"])
        assert (Path(stored.path) / "model.int8.onnx").is_file()
        assert read_contract(stored.info.metadata, meta["tag"]).int8 == figures
        card = (Path(stored.path) / MODEL_CARD_FILE).read_text()
    assert "### int8 artefact (model.int8.onnx" in card
    assert f"Largest |probability difference| from fp32: {figures.max_abs_delta_p:.4f}" in card


def test_int8_export_refuses_a_drop_above_max_auroc_drop_and_stores_nothing(tiny_run, tmp_path):
    import bentoml

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
        before = {str(model.tag) for model in bentoml.models.list()}
    with pytest.raises(UserError) as error:
        _export(tiny_run, tmp_path, "quantize.max_auroc_drop=-1")
    message = str(error.value)
    assert message.startswith("the int8 artefact's test macro AUROC drops by ") and "\n" not in message
    assert "quantize.max_auroc_drop=-1" in message
    assert not (tmp_path / "export" / "model.int8.onnx").exists()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
        # (BentoML keeps the store the process opened first, whatever BENTOML_HOME says: no new model in it.)
        assert {str(model.tag) for model in bentoml.models.list()} == before


def test_int8_without_the_onnx_artefact_is_one_line_before_anything_slow(tiny_run, tmp_path, monkeypatch):
    import faceattr.export.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_module", lambda *a: (_ for _ in ()).throw(AssertionError("loaded")))
    cfg = compose_export(f"ckpt={tiny_run}", "export=torchscript", "export.quantize=int8", "store=false")
    with pytest.raises(UserError, match=r"^export.quantize=int8 quantizes the ONNX artefact, which export.formats="):
        pipeline.export(cfg)


def _test_images(synthetic_root: Path, count: int = 4) -> list[Path]:
    """A few of the generated data's test-split images (CelebA's partition 2)."""
    partition = next(synthetic_root.rglob("list_eval_partition.*"))
    names = [line.split()[0] for line in partition.read_text().splitlines() if line.split()[-1:] == ["2"]]
    files = {path.name: path for path in synthetic_root.rglob("*.jpg")}
    return [files[name] for name in names[:count]]


def test_the_service_answers_with_int8_on_a_cpu_within_the_recorded_tolerance(quantized, synthetic_root):
    from serve_process import service_in_process

    from faceattr.serve.config import default_serve_config
    from faceattr.serve.runtime import Predictor, resolve_model

    meta, out = quantized
    tolerance = meta["contract"]["int8"]["max_abs_delta_p"]
    images = _test_images(synthetic_root)
    answers = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        info = resolve_model(default_serve_config(model=meta["tag"]))
        assert Predictor(info, default_serve_config(model=meta["tag"], format="onnx")).artefact == "onnx_int8"
        assert (
            Predictor(info, default_serve_config(model=meta["tag"], format="onnx", precision="fp32")).artefact == "onnx"
        )
        for precision in ("auto", "fp32"):
            with service_in_process(meta["tag"], precision=precision) as client:
                answers[precision] = []
                for path in images:
                    reply = client.post("/predict", files={"image": (path.name, path.read_bytes())})
                    assert reply.status_code == 200, reply.text
                    answers[precision].append(reply.json()["attributes"])
    deltas = [abs(int8[name] - fp32[name]) for int8, fp32 in zip(answers["auto"], answers["fp32"]) for name in fp32]
    assert 0 < max(deltas) <= tolerance + 2e-6  # int8 answered (not fp32's numbers), within the recorded tolerance


def test_precision_picks_int8_on_a_cpu_only_where_the_model_has_it():
    from faceattr.serve.config import ServeConfigError, default_serve_config, served_artefact

    both = {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx", "torchscript": "model.pt"}
    fp32_only = {"onnx": "model.onnx"}
    onnx = {
        precision: default_serve_config(format="onnx", precision=precision) for precision in ("auto", "fp32", "int8")
    }
    assert served_artefact(onnx["auto"], both, "cpu") == "onnx_int8"
    assert served_artefact(onnx["auto"], both, "cuda") == "onnx"  # auto: int8 where it pays, on a CPU
    assert served_artefact(onnx["auto"], fp32_only, "cpu") == "onnx"
    assert served_artefact(onnx["fp32"], both, "cpu") == "onnx"
    assert served_artefact(onnx["int8"], both, "cuda") == "onnx_int8"
    assert served_artefact(default_serve_config(format="torchscript"), both, "cpu") == "torchscript"
    with pytest.raises(ServeConfigError, match="^precision=int8 runs the model's int8 ONNX artefact, not torchscript"):
        served_artefact(default_serve_config(format="torchscript", precision="int8"), both, "cpu")


def test_precision_int8_without_an_int8_artefact_is_refused_before_any_worker_starts():
    """`bentoml serve`'s start-up check (served_model) reads the artefact precision picks: a model without int8, or
    int8 asked of TorchScript, is one line naming the fix, not a worker failing later."""
    from serve_process import stored_probe_model

    from faceattr.serve.config import default_serve_config
    from faceattr.serve.runtime import ModelError, served_model

    with stored_probe_model("probe-no-int8", attributes=("Smiling",)) as (tag, _):
        with pytest.raises(ModelError, match=r"has no int8 artefact \(it has: torchscript\); export it with "):
            served_model(default_serve_config(format="onnx", precision="int8"), tag)
        with pytest.raises(ModelError, match="^precision=int8 runs the model's int8 ONNX artefact, not torchscript"):
            served_model(default_serve_config(format="torchscript", precision="int8"), tag)
        config, _ = served_model(default_serve_config(precision="auto"), tag)  # auto: fp32 where there is no int8
        assert config.format == "torchscript"


def test_predict_runs_the_artefact_precision_picks(quantized, synthetic_root, tmp_path):
    """predict.py's `precision` is the service's: auto runs int8 on a CPU, fp32 the fp32 ONNX artefact, and their
    probabilities differ by no more than the recorded tolerance."""
    import csv

    from omegaconf import OmegaConf

    from faceattr.config.schemas import CONFIG_DIRS
    from faceattr.prediction import predict_images

    meta, out = quantized
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in _test_images(synthetic_root):
        (photos / path.name).write_bytes(path.read_bytes())
    rows = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        for precision in ("auto", "fp32"):
            cfg = OmegaConf.load(CONFIG_DIRS["predict"] / "predict.yaml")
            for key in ("defaults", "hydra"):
                cfg.pop(key)
            cfg.merge_with(
                {"model": meta["tag"], "images": str(photos), "out": str(tmp_path / f"{precision}.csv")}
                | {"precision": precision, "threads": 1}
            )
            summary = predict_images(cfg)
            assert summary["format"] == {"auto": "onnx_int8", "fp32": "onnx"}[precision]
            with open(tmp_path / f"{precision}.csv", newline="", encoding="utf-8") as f:
                rows[precision] = list(csv.DictReader(f))
    names = read_contract(meta, meta["tag"]).attributes
    deltas = [abs(float(a[n]) - float(b[n])) for a, b in zip(rows["auto"], rows["fp32"]) for n in names]
    assert len(rows["auto"]) == 4 and 0 < max(deltas) <= meta["contract"]["int8"]["max_abs_delta_p"] + 2e-6
