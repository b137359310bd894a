"""The model card and temperature scaling at export: every Mitchell et al. section; every figure of the card equal to
the export's metadata and to a recomputation here from the checkpoint's own test predictions (the data module's test
loader, not export's code); the caveats; temperatures applied inside both artefacts; a single-attribute model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, run_main, run_script
from test_export import compose_export

from faceattr.artefacts import load_torchscript
from faceattr.contract import read_contract
from faceattr.export.model_card import MISSING, SECTIONS, render_card
from faceattr.model.loading import load_module
from faceattr.model.metrics import f1_thresholds

GROUPS = ("Male", "Young")
TOL = 6e-5  # the card prints 4 decimals


def _export(ckpt, out: Path, *overrides: str) -> tuple[dict, Path | None]:
    """export.py's pipeline in process, into a fresh model store under ``out``: (metadata, stored model folder)."""
    import bentoml

    from faceattr.export.pipeline import export

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        cfg = compose_export(f"ckpt={ckpt}", f"output_dir={out / 'export'}", "calibration.num_workers=0", *overrides)
        meta = export(cfg)
        folder = Path(bentoml.models.get(meta["tag"]).path) if meta.get("tag") else None
    return meta, folder


@pytest.fixture(scope="module")
def scaled(tiny_run, tmp_path_factory):
    """The tiny run exported with export.calibration=temperature: (metadata, export folder, stored model folder)."""
    import bentoml

    out = tmp_path_factory.mktemp("card")
    meta, folder = _export(tiny_run, out, "export.calibration=temperature", "export=onnx")
    yield meta, out / "export", folder
    # Out of the store again: predict.py resolves the tiny run to the newest stored model exported from its
    # checkpoint, and BentoML keeps the first store a process opened, whatever BENTOML_HOME says later.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(out / "bentoml"))
        bentoml.models.delete(meta["tag"])


def _tables(card: str) -> dict[str, list[dict[str, str]]]:
    """Every table of the card under its ``###`` heading (its first words), as rows of {column: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, header = None, None
    for line in card.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("# ").split(" (")[0], None
        elif line.startswith("|") and heading:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-"):
                tables.setdefault(heading, []).append(dict(zip(header, cells)))
    return tables


def _value(cell: str) -> float | None:
    return None if cell == MISSING else float(cell.split(" [")[0])


def _interval(cell: str) -> tuple[float, float, float] | None:
    match = re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", cell)
    return None if match is None else tuple(float(v) for v in match.groups())


def _close(cell: str, expected: float | None, what) -> None:
    value = _value(cell)
    if expected is None or (isinstance(expected, float) and np.isnan(expected)):
        assert value is None, (what, cell)
    else:
        assert value is not None and abs(value - expected) <= TOL, (what, cell, expected)


def _test_predictions(run_dir: Path, meta: dict):
    """The checkpoint's test-split probabilities as the artefacts give them (sigmoid(logit / T)), its labels and
    the data's Male/Young labels, through the data module's own test loader (training's image rule)."""
    from faceattr.data import CelebADataModule

    contract = read_contract(meta, "the export")
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    datamodule = CelebADataModule(
        root=data["root"],
        attributes=list(contract.attributes),
        image_size=list(contract.image_size),
        crop=list(contract.crop),
        jpeg_scaling=contract.jpeg_scaling,
        num_workers=0,
    )
    datamodule.setup("test")
    module = load_module(Path(meta["source"]["checkpoint"]))
    logits, labels = [], []
    with torch.no_grad():
        for images, batch_labels, _ in datamodule.test_dataloader():
            logits.append(module(images.float() / 255))
            labels.append(batch_labels)
    temperatures = torch.tensor(contract.temperatures)
    probs = torch.sigmoid(torch.cat(logits) / temperatures).numpy()
    return contract, probs, torch.cat(labels).numpy(), datamodule.group_labels("test", GROUPS).numpy()


def _rates(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    def mean(values):
        return float(values.mean()) if len(values) else None

    return {
        "n": len(y),
        "Positive rate": mean(y),
        "Predicted positive rate": mean(pred),
        "Accuracy": mean(pred == y),
        "FPR": mean(pred[~y]),
        "FNR": mean(~pred[y]),
    }


@pytest.mark.slow
def test_every_figure_of_the_card_is_the_exports_own_test_evaluation(scaled, tiny_run):
    meta, out, folder = scaled
    card = (folder / "MODEL_CARD.md").read_text()
    assert card == (out / "MODEL_CARD.md").read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in card, section
    tables = _tables(card)
    test = meta["metrics"]["test"]
    contract, probs, labels, group_labels = _test_predictions(tiny_run, meta)
    thresholds = np.array(contract.thresholds, dtype=np.float32)
    y, pred = labels == 1, probs >= thresholds
    assert len(probs) == test["num_images"]

    overall = {row["Decision rule"]: row for row in tables["Overall"]}
    for rule, key in (("0.5", "at_0.5"), ("calibrated thresholds", "at_thresholds")):
        _close(overall[rule]["AUROC"], test["auroc"], rule)
        for column, name in (("Accuracy", "acc"), ("Balanced accuracy", "bacc"), ("F1", "f1")):
            _close(overall[rule][column], test[key][name], (rule, column))
    # The served rule's macro accuracy, recomputed here.
    _close(overall["calibrated thresholds"]["Accuracy"], float((pred == y).mean()), "recomputed accuracy")

    rows = tables["Per attribute"]
    assert [row["Attribute"] for row in rows] == list(contract.attributes)
    calibration = test["calibration"]
    for a, row in enumerate(rows):
        name = row["Attribute"]
        _close(row["Threshold"], contract.thresholds[a], name)
        _close(row["Temperature"], contract.temperatures[a], name)
        _close(row["Test positive rate"], float(y[:, a].mean()), name)
        _close(row["Test positive rate"], test["positive_rates"][name], name)
        _close(row["Predicted positive rate"], float(pred[:, a].mean()), name)
        _close(row["Predicted positive rate"], test["predicted_positive_rates"][name], name)
        _close(row["ECE before"], calibration["ece_before"]["per_attribute"][name], name)
        _close(row["ECE after"], calibration["ece_after"]["per_attribute"][name], name)
        _close(row["Accuracy"], float((pred[:, a] == y[:, a]).mean()), name)
        # Worst-group accuracy: the 4 x 2 groups (label x group value), as the spurious-correlation papers define it.
        accuracies = {
            f"{name}={label},{group}={value}": float((pred[inside, a] == y[inside, a]).mean())
            for g, group in enumerate(GROUPS)
            if group != name
            for label in (0, 1)
            for value in (0, 1)
            if (inside := (labels[:, a] == label) & (group_labels[:, g] == value)).any()
        }
        worst = min(accuracies, key=accuracies.get)
        _close(row["Worst-group accuracy"], accuracies[worst], name)
        assert accuracies[row["Worst group"]] == pytest.approx(accuracies[worst]), name

    # The disaggregated table: every attribute x every cell (all, each group value, the intersections).
    cells = tables["Disaggregated by group"]
    assert len(cells) == sum(1 + (8 if name not in GROUPS else 2) for name in contract.attributes)
    index = {name: a for a, name in enumerate(contract.attributes)}
    for row in cells:
        a = index[row["Attribute"]]
        inside = np.ones(len(labels), dtype=bool)
        if row["Group"] != "all":
            for part in row["Group"].split(","):
                group, value = part.split("=")
                inside &= group_labels[:, GROUPS.index(group)] == int(value)
        expected = _rates(y[inside, a], pred[inside, a])
        assert int(row["n"]) == expected.pop("n"), row
        for column, value in expected.items():
            _close(row[column], value, (row["Attribute"], row["Group"], column))
            bounds = _interval(row[column])
            if bounds is not None:  # a 95% interval around its rate
                assert bounds[1] <= bounds[0] <= bounds[2], row

    macro = {row["Figure"]: row for row in tables["Calibration"]}
    _close(macro["ECE"]["Before temperature scaling"], calibration["ece_before"]["macro"], "ECE")
    _close(macro["ECE"]["Served (after)"], calibration["ece_after"]["macro"], "ECE")
    assert f"{test['num_images']} images" in card
    # Trained on the generated test data: the card says so plainly, and carries the CelebA label-noise finding.
    assert "**This model was trained and evaluated on generated faces, not photographs of people.**" in card
    assert "only 12 of the 40 attributes reach at least 95% agreement" in card
    assert "This model predicts High_Cheekbones, Oval_Face, Pointy_Nose" in card


@pytest.mark.slow
def test_temperatures_are_fitted_applied_inside_both_artefacts_and_parity_checked(scaled, tiny_run, monkeypatch):
    import onnxruntime as ort

    from faceattr.export.calibrate import split_set
    from faceattr.serve.config import load_serve_config
    from faceattr.serve.runtime import Predictor, served_model

    meta, out, folder = scaled
    contract = read_contract(meta, "the export")
    assert contract.temperature_scaled and all(t > 0 for t in contract.temperatures)
    module = load_module(Path(meta["source"]["checkpoint"]))
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = torch.sigmoid(module(images) / torch.tensor(contract.temperatures))
        unscaled = torch.sigmoid(module(images))
    assert (expected - unscaled).abs().max() > 1e-3  # the temperatures change the outputs: the check below can fail
    scripted, _ = load_torchscript(folder / "model.pt")
    assert (scripted(images) - expected).abs().max() <= 1e-5
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"images": images.numpy()})[0] - expected.numpy()).max() <= 1e-4
    for fmt in ("torchscript", "onnx"):
        assert meta["parity"][fmt]["max_abs_diff"] <= 1e-4
    # The service, loading the stored model as it does, answers the same scaled probabilities.
    monkeypatch.setenv("BENTOML_HOME", str(out.parent / "bentoml"))
    pixels = (images * 255).round().to(torch.uint8)
    with torch.no_grad():
        expected_pixels = torch.sigmoid(module(pixels.float() / 255) / torch.tensor(contract.temperatures)).numpy()
    for fmt in ("torchscript", "onnx"):
        config, info = served_model(load_serve_config({"FACEATTR_SERVE_FORMAT": fmt}), meta["tag"])
        assert np.abs(Predictor(info, config)(pixels.numpy()) - expected_pixels).max() <= 1e-4, fmt
    # Thresholds are the F1-optimal ones of the scaled validation probabilities.
    validation, _ = split_set(dict(module.hparams), yaml.safe_load((tiny_run / "config.yaml").read_text()), None)
    from faceattr.export.calibrate import predict

    _, logits = predict(module, validation.paths, (32, 32), (178, 178), 64, 0, keep=0, jpeg_scaling=True)
    probs = torch.sigmoid(logits / torch.tensor(contract.temperatures))
    thresholds, _ = f1_thresholds(probs, validation.labels, 0.5)
    assert contract.thresholds == pytest.approx(thresholds.tolist(), abs=1e-6)
    assert "temperature-scaled" in contract.threshold_method
    calibration = meta["metrics"]["test"]["calibration"]
    assert calibration["method"] == "temperature" and calibration["ece_before"] != calibration["ece_after"]
    # The store's metadata says where the card is.
    info = yaml.safe_load((folder / "model.yaml").read_text())
    assert info["labels"]["model_card"] == "MODEL_CARD.md" and info["metadata"]["model_card"]["file"] == "MODEL_CARD.md"


def _metadata(attributes, generated: bool, groups=None) -> dict:
    """A hand-made faceattr.json with round figures."""
    names = list(attributes)
    per = {name: 0.25 for name in names}
    return {
        "contract": {
            "backbone": "resnet18",
            "attributes": names,
            "image_size": [64, 64],
            "crop": [178, 178],
            "thresholds": {name: 0.5 for name in names},
            "temperatures": {name: 1.0 for name in names},
            "threshold_method": "F1-optimal per attribute on 10 validation images",
        },
        "metrics": {
            "validation": {"num_images": 10},
            "test": {
                "num_images": 20,
                "auroc": 0.75,
                "at_0.5": {"acc": 0.5, "bacc": 0.5, "f1": 0.5},
                "at_thresholds": {"acc": 0.625, "bacc": 0.5, "f1": 0.5},
                "positive_rates": per,
                "predicted_positive_rates": per,
                "calibration": {"method": "none", "ece_before": {"macro": 0.125, "per_attribute": per}},
                **({"groups": groups} if groups else {}),
            },
        },
        "training_data": {"root": "/data", "data_module": "CelebADataModule", "generated": {"num_images": 9}}
        if generated
        else {"root": "/data", "data_module": "CelebADataModule"},
    }


def test_card_sections_and_caveats_follow_the_model_and_its_data():
    own = render_card(_metadata(["Glasses", "Beard"], generated=False), [], None, "2026-01-02")
    for section in SECTIONS:
        assert f"\n## {section}\n" in own, section
    assert "generated faces" not in own.lower()  # photographs: no generated-data sentence
    assert "Wu et al." not in own  # not CelebA's attributes: CelebA's label study does not apply
    assert "not saved to a model store" in own and "2026-01-02" in own
    assert "Not measured (no group attributes)." in own
    tables = _tables(own)
    assert tables["Per attribute"][0]["ECE after"] == MISSING  # not measured: never a made-up figure
    assert tables["Overall"][1]["Accuracy"] == "0.6250"

    worst = {"Smiling": {"worst_group": "Smiling=1,Male=1", "worst_group_acc": 0.375, "avg_acc": 0.8}}
    celeba = render_card(
        _metadata(["Smiling", "Oval_Face"], generated=True, groups={"groups": ["Male"], "worst": worst}),
        [{"attribute": "Smiling", "group": "Male=1", "n": 7, "acc": 0.375, "acc_low": 0.1, "acc_high": 0.7}],
        "faceattr:abc",
        "2026-01-02",
    )
    assert celeba.startswith("# Model card: faceattr:abc\n")
    assert "**This model was trained and evaluated on generated faces" in celeba
    assert "This model predicts Oval_Face: treat those outputs as unreliable." in celeba
    assert "Groups evaluated: `Male`" in celeba
    tables = _tables(celeba)
    assert tables["Disaggregated by group"][0]["Accuracy"] == "0.3750 [0.1000, 0.7000]"
    assert tables["Disaggregated by group"][0]["FPR"] == MISSING
    assert tables["Worst groups"] == [
        {
            "Attribute": "Smiling",
            "Worst group": "Smiling=1,Male=1",
            "Worst-group accuracy": "0.3750",
            "Accuracy": "0.8000",
        }
    ]


@pytest.mark.slow
def test_a_single_attribute_model_trains_evaluates_exports_with_its_card_and_serves(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    run_script(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "data.attributes=[Smiling]",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp_path,
    )
    meta, folder = _export(run_dir, tmp_path, "export.calibration=temperature", "export=torchscript")
    contract = read_contract(meta, "the export")
    assert contract.attributes == ("Smiling",) and len(contract.temperatures) == 1
    assert meta["parity"]["torchscript"]["max_abs_diff"] <= 1e-4
    assert list(meta["metrics"]["test"]["positive_rates"]) == ["Smiling"]
    card = (folder / "MODEL_CARD.md").read_text()
    rows = _tables(card)["Disaggregated by group"]
    assert [row["Group"] for row in rows][:3] == ["all", "Male=0", "Male=1"] and len(rows) == 9
    assert json.loads((tmp_path / "export" / "faceattr.json").read_text())["model_card"]["file"] == "MODEL_CARD.md"

    # eval.py: the one attribute's table, its groups and its calibration.
    assert run_main("eval.py", f"ckpt={run_dir}", "data.num_workers=0", tmp_path=tmp_path) == 0
    evaluated = json.loads((run_dir / "eval" / "test.json").read_text())
    assert evaluated["num_images"] > 0 and 0 <= evaluated["acc"] <= 1
    table = (run_dir / "eval" / "test_per_attribute.csv").read_text().splitlines()
    assert len(table) == 2 and table[1].startswith("Smiling,")
    assert (run_dir / "eval" / "test_groups.csv").is_file()

    # The service: one probability, under the attribute's name.
    from serve_process import SAMPLES, service_in_process

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
        with service_in_process(meta["tag"]) as client:
            answer = client.post("/predict", files={"image": ("a.jpg", (SAMPLES / "grace_hopper.jpg").read_bytes())})
    assert answer.status_code == 200, answer.text
    probabilities = answer.json()["attributes"]
    assert list(probabilities) == ["Smiling"] and 0 <= probabilities["Smiling"] <= 1


@pytest.mark.slow
def test_groups_option_picks_the_group_attributes_and_refuses_a_missing_one_before_anything_slow(
    tiny_run, tmp_path, monkeypatch
):
    import faceattr.export.pipeline as pipeline
    from faceattr.errors import UserError
    from faceattr.export.pipeline import export

    real_predict = pipeline.predict

    def no_prediction(*args, **kwargs):
        raise AssertionError("the model ran before the bad groups= was refused")

    monkeypatch.setattr(pipeline, "predict", no_prediction)
    cfg = compose_export(f"ckpt={tiny_run}", "store=false", f"output_dir={tmp_path}", "groups=[Male,Beard]")
    with pytest.raises(UserError) as error:
        export(cfg)
    message = str(error.value)
    assert (
        message.startswith("groups: the data has no column Beard; its columns: 5_o_Clock_Shadow, ")
        and "\n" not in message
    )
    monkeypatch.setattr(pipeline, "predict", real_predict)

    meta = export(compose_export(f"ckpt={tiny_run}", "store=false", f"output_dir={tmp_path}", "groups=[Young]"))
    assert meta["metrics"]["test"]["groups"]["groups"] == ["Young"]
    rows = _tables((tmp_path / "MODEL_CARD.md").read_text())["Disaggregated by group"]
    assert {row["Group"] for row in rows} == {"all", "Young=0", "Young=1"}
    meta = export(compose_export(f"ckpt={tiny_run}", "store=false", f"output_dir={tmp_path}", "groups=[]"))
    assert "groups" not in meta["metrics"]["test"] and "positive_rates" in meta["metrics"]["test"]
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "Not measured (no group attributes)." in card and "not saved to a model store" in card
