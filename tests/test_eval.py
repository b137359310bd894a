"""`eval.py`: one checkpoint on one split with the literature's figures; and the runs those figures come from
(pos_weight, EMA, the reference preset)."""

from __future__ import annotations

import csv
import functools
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, run_main, run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.errors import UserError

FIGURES = ("acc", "bacc", "auroc", "f1", "loss")


def compose(config: str, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config, overrides=list(overrides))


@pytest.fixture()
def run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run (eval writes into the run dir it evaluates)."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("export", "eval"))
    return copy


@pytest.mark.slow
def test_eval_reproduces_the_runs_own_test_figures(run_copy):
    from faceattr.evaluation import evaluate

    record = json.loads((run_copy / "run.json").read_text())
    summary = evaluate(compose("eval", f"ckpt={run_copy}", "data.num_workers=0"))
    for name in FIGURES:
        assert summary[name] == pytest.approx(record["test"][f"test/{name}"], abs=1e-4), name
    saved = json.loads((run_copy / "eval" / "test.json").read_text())
    assert saved["num_images"] == summary["num_images"] > 0 and saved["acc"] == summary["acc"]
    rows = list(csv.DictReader((run_copy / "eval" / "test_per_attribute.csv").open()))
    assert [row["attribute"] for row in rows] == list(CELEBA_ATTRIBUTES)
    assert set(rows[0]) == {"attribute", "positive_rate", "acc", "bacc", "auroc", "f1", "threshold"}
    mean_acc = sum(float(row["acc"]) for row in rows) / len(rows)
    assert mean_acc == pytest.approx(summary["acc"], abs=1e-5)
    # The run record carries the same per-attribute table for the tested checkpoint.
    assert record["test_per_attribute"]["Smiling"]["acc"] == pytest.approx(float(rows[31]["acc"]), abs=1e-5)
    assert {"test/bacc", "test/acc", "test/auroc"} <= set(record["test"])
    # Sorted by accuracy, best first, with the mean line last.
    lines = summary["table"].splitlines()
    accuracies = [float(line.split()[2]) for line in lines[1:-1]]
    assert accuracies == sorted(accuracies, reverse=True) and lines[-1].startswith("mean")
    events = EventAccumulator(summary["tensorboard"])
    events.Reload()
    assert {"eval/test/acc", "eval/test/bacc", "eval/test/acc/Smiling"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_eval_on_validation_with_calibrated_thresholds(run_copy):
    from faceattr.evaluation import evaluate

    summary = evaluate(
        compose(
            "eval",
            f"ckpt={run_copy}",
            "split=valid",
            "thresholds=calibrated",
            "data.num_workers=0",
            "tensorboard=false",
        )
    )
    assert summary["thresholds"].startswith("calibrated (F1-optimal on")
    rows = list(csv.DictReader((run_copy / "eval" / "valid_per_attribute.csv").open()))
    assert len({row["threshold"] for row in rows}) > 1  # per-attribute thresholds, not one 0.5
    with pytest.raises(UserError, match="split='train': expected one of test, valid"):
        evaluate(compose("eval", f"ckpt={run_copy}", "split=train"))
    with pytest.raises(UserError, match="thresholds='often': expected a number in"):
        evaluate(compose("eval", f"ckpt={run_copy}", "thresholds=often"))


@pytest.mark.slow
def test_eval_cli_prints_the_table_and_the_mean_figures(run_copy, tmp_path):
    proc = run_script("eval.py", f"ckpt={run_copy}", "data.num_workers=0", tmp_path=tmp_path)
    assert proc.stdout.splitlines()[0].split() == [
        "attribute",
        "positive_rate",
        "acc",
        "bacc",
        "auroc",
        "f1",
        "threshold",
    ]
    assert "mean:        acc=" in proc.stdout and "bacc=" in proc.stdout
    # (A bad eval.py command line, in eval.py's own process, is one line and status 2: tests/test_schemas.py.)


def _fit_tiny(tmp_path: Path, root: Path, callbacks=(), **model_kwargs) -> Path:
    """One epoch of test_resnet at 32x32 on the generated data, in process; returns the saved checkpoint."""
    from faceattr.data import CelebADataModule
    from faceattr.model import FaceAttrModule

    datamodule = CelebADataModule(root=str(root), image_size=32, batch_size=16, num_workers=0)
    module = FaceAttrModule(
        backbone="test_resnet",
        attributes=CELEBA_ATTRIBUTES,
        image_size=32,
        crop=178,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
        **model_kwargs,
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.slow
def test_a_pos_weight_run_exports_parity_checks_and_serves(tmp_path, synthetic_root, monkeypatch):
    import numpy as np

    from faceattr.export.pipeline import export
    from faceattr.model import FaceAttrModule
    from faceattr.serve.config import load_serve_config
    from faceattr.serve.runtime import Predictor, served_model

    checkpoint = _fit_tiny(tmp_path, synthetic_root, pos_weight=True)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["pos_weight"] and not any("pos_weight" in k for k in state["state_dict"])
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    meta = export(
        compose(
            "export",
            f"ckpt={checkpoint}",
            f"data_root={synthetic_root}",
            "export=onnx",
            f"output_dir={tmp_path / 'export'}",
            "calibration.num_workers=0",
        )
    )
    assert all(meta["parity"][fmt]["max_abs_diff"] <= 1e-4 for fmt in ("torchscript", "onnx"))
    # The reference: the checkpoint loaded by Lightning alone (no export or serving code), on [0, 1] pixels.
    reference = FaceAttrModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.sigmoid(reference(torch.from_numpy(images).float() / 255)).numpy()
    assert expected.std() > 1e-3  # the inputs give the attributes different probabilities: a swap would show
    for fmt in ("torchscript", "onnx"):  # what the service runs, loaded from the store as the service loads it
        config, info = served_model(load_serve_config({"FACEATTR_SERVE_FORMAT": fmt}), meta["tag"])
        probs = Predictor(info, config)(images)
        assert probs.shape == (4, 40) and np.abs(probs - expected).max() <= 1e-4, fmt


@pytest.mark.slow
def test_ema_checkpoints_hold_the_averaged_weights_that_export_loads(tmp_path, synthetic_root):
    from hydra.utils import instantiate

    from faceattr.model.loading import load_module

    ema = instantiate(compose("train", "callbacks=ema").callbacks.ema)
    _fit_tiny(tmp_path, synthetic_root, callbacks=[ema])
    [checkpoint] = (tmp_path / "checkpoints").glob("*.ckpt")  # saved by ModelCheckpoint during training
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    averaged, current = state["state_dict"], state["current_model_state"]
    key = "net.fc.weight"
    assert not torch.equal(averaged[key], current[key])  # both kept: averaged for use, raw for resuming
    torch.testing.assert_close(load_module(checkpoint).state_dict()[key], averaged[key])


@pytest.mark.slow
def test_the_reference_preset_runs_on_generated_data(tmp_path, synthetic_root):
    import timm

    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)  # stands in for ImageNet weights
    config = compose("train", "experiment=celeba_reference")
    assert config.data.limit is None and config.data.val_limit is None and config.data.crop is None
    assert list(config.data.image_size) == [218, 178] and config.model.backbone == "resnet18"
    status = run_main(  # train.py's main in this process
        "train.py",
        "experiment=celeba_reference",
        f"data.root={synthetic_root}",
        f"model.weights={weights}",
        "data.batch_size=4",
        "data.num_workers=0",
        "debug=fdr",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp_path=tmp_path,
    )
    assert status == 0
