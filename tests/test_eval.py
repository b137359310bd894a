"""`eval.py`: one checkpoint on one split with the literature's figures; and the runs those figures come from
(pos_weight, EMA, the reference preset)."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO, run_main, run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.errors import UserError

FIGURES = ("acc", "bacc", "auroc", "f1", "ece", "brier", "loss")


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
    assert set(rows[0]) == {"attribute", "positive_rate", "acc", "bacc", "auroc", "f1", "threshold", "ece", "brier"}
    mean_acc = sum(float(row["acc"]) for row in rows) / len(rows)
    assert mean_acc == pytest.approx(summary["acc"], abs=1e-5)
    # The run record carries the same per-attribute table for the tested checkpoint.
    assert record["test_per_attribute"]["Smiling"]["acc"] == pytest.approx(float(rows[31]["acc"]), abs=1e-5)
    assert {"test/bacc", "test/acc", "test/auroc"} <= set(record["test"])
    # Sorted by accuracy, best first, with the mean line last.
    lines = summary["table"].splitlines()
    accuracies = [float(line.split()[2]) for line in lines[1:-1]]
    assert accuracies == sorted(accuracies, reverse=True) and lines[-1].startswith("mean")
    # Calibration: the reliability diagram is a PNG; on generated data, Male and Young are the default groups.
    assert (run_copy / "eval" / "test_reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["groups"]["groups"] == ["Male", "Young"] and (run_copy / "eval" / "test_groups.csv").is_file()
    events = EventAccumulator(summary["tensorboard"])
    events.Reload()
    assert {"eval/test/acc", "eval/test/bacc", "eval/test/acc/Smiling"} <= set(events.Tags()["scalars"])


def _celeba_test_labels(root: Path) -> tuple[list[str], np.ndarray]:
    """The attribute names and the test partition's labels (1/0), read from CelebA's text files here, by hand."""
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    labels = {row.split()[0]: [int(v) for v in row.split()[1:]] for row in lines[2:]}
    partition = [row.split() for row in (root / "list_eval_partition.txt").read_text().splitlines()]
    test = [name for name, part in partition if part == "2"]
    return names, (np.array([labels[name] for name in test]) == 1).astype(np.uint8)


@pytest.mark.slow
def test_groups_agree_with_an_independent_recomputation(run_copy):
    """Done-when of issue 22: eval's per-group and worst-group accuracies equal scikit-learn's on the checkpoint's
    own test predictions, with group membership read from the annotation file by hand."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from sklearn.metrics import accuracy_score, roc_auc_score

    from faceattr.model import FaceAttrModule

    summary = evaluate_groups(run_copy)
    checkpoint = Path(summary["checkpoint"])
    module = FaceAttrModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    data = OmegaConf.load(run_copy / "config.yaml").data
    datamodule = instantiate(data, num_workers=0)
    datamodule.setup("test")
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(module(x.float() / 255)) for x, _, _ in datamodule.test_dataloader()])
    probs = probs.numpy()
    names, labels = _celeba_test_labels(Path(data.root))
    assert len(labels) == len(probs) > 0
    predicted = (probs >= np.float32(0.5)).astype(np.uint8)
    male, young = labels[:, names.index("Male")], labels[:, names.index("Young")]
    rows = {(r["attribute"], r["group"]): r for r in csv.DictReader((run_copy / "eval" / "test_groups.csv").open())}
    checked = 0
    for a, name in enumerate(names):
        cells = {"all": np.ones(len(labels), bool)}
        if name != "Male":
            cells |= {f"Male={v}": male == v for v in (0, 1)}
        if name != "Young":
            cells |= {f"Young={v}": young == v for v in (0, 1)}
        if name not in ("Male", "Young"):
            cells |= {f"Male={m},Young={y}": (male == m) & (young == y) for m in (0, 1) for y in (0, 1)}
        assert {g for (attribute, g) in rows if attribute == name} == set(cells)  # never against itself
        for group, inside in cells.items():
            row = rows[name, group]
            assert int(row["n"]) == inside.sum()
            if inside.any():
                expected = accuracy_score(labels[inside, a], predicted[inside, a])
                assert float(row["acc"]) == pytest.approx(expected, abs=1e-6), (name, group)
                checked += 1
        if 0 < labels[:, a].sum() < len(labels):
            expected = roc_auc_score(labels[:, a], probs[:, a])
            assert float(rows[name, "all"]["auroc"]) == pytest.approx(expected, abs=1e-6)
        # Worst-group accuracy: the 4 groups of (label) x (group value), for each group attribute but itself.
        accuracies = {}
        for group_name, values in (("Male", male), ("Young", young)):
            if group_name == name:
                continue
            for y, v in itertools.product((0, 1), repeat=2):
                inside = (labels[:, a] == y) & (values == v)
                if inside.any():
                    accuracies[f"{name}={y},{group_name}={v}"] = accuracy_score(labels[inside, a], predicted[inside, a])
        worst = summary["groups"]["worst"][name]
        assert worst["worst_group_acc"] == pytest.approx(min(accuracies.values()), abs=1e-6)
        assert accuracies[worst["worst_group"]] == pytest.approx(worst["worst_group_acc"], abs=1e-6)
        assert worst["avg_acc"] == pytest.approx(accuracy_score(labels[:, a], predicted[:, a]), abs=1e-6)
    assert checked > 200
    saved = json.loads((run_copy / "eval" / "test.json").read_text())
    assert saved["groups"]["worst"]["Blond_Hair"] == summary["groups"]["worst"]["Blond_Hair"]
    assert set(saved["groups"]["gaps"]["Blond_Hair"]) == {"Male", "Young", "Male,Young"}
    lines = summary["worst_groups"].splitlines()
    assert lines[0].split()[:4] == ["attribute", "group", "n", "acc"] and len(lines) == 11


def evaluate_groups(run_dir: Path, *overrides: str) -> dict:
    from faceattr.evaluation import evaluate

    return evaluate(
        compose("eval", f"ckpt={run_dir}", "data.num_workers=0", "groups=[Male,Young]", "tensorboard=false", *overrides)
    )


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
            "groups=[]",
        )
    )
    assert summary["thresholds"].startswith("calibrated (F1-optimal on")
    assert summary["groups"] is None and not (run_copy / "eval" / "valid_groups.csv").exists()  # groups=[]: off
    assert (run_copy / "eval" / "valid_reliability.png").is_file()
    rows = list(csv.DictReader((run_copy / "eval" / "valid_per_attribute.csv").open()))
    assert len({row["threshold"] for row in rows}) > 1  # per-attribute thresholds, not one 0.5
    with pytest.raises(UserError, match="split='train': expected one of test, valid"):
        evaluate(compose("eval", f"ckpt={run_copy}", "split=train"))
    with pytest.raises(UserError, match="thresholds='often': expected a number in"):
        evaluate(compose("eval", f"ckpt={run_copy}", "thresholds=often"))
    with pytest.raises(UserError, match=r"unknown attribute\(s\) Nope in groups; valid names: 5_o_Clock_Shadow, "):
        evaluate(compose("eval", f"ckpt={run_copy}", "groups=[Male,Nope]", "data.num_workers=0"))


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
        "ece",
        "brier",
    ]
    assert "mean:        acc=" in proc.stdout and "bacc=" in proc.stdout
    assert "the ten worst groups (by Male, Young):" in proc.stdout and "ece=" in proc.stdout
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


def test_default_groups_are_male_and_young_where_the_data_has_both():
    from types import SimpleNamespace

    from faceattr.eval_groups import resolve_groups

    celeba = SimpleNamespace(column_names=CELEBA_ATTRIBUTES)
    assert resolve_groups(None, celeba) == ["Male", "Young"]
    assert resolve_groups([], celeba) == []
    assert resolve_groups(None, SimpleNamespace(column_names=("Smiling", "Male", "Glasses"))) == []


def test_the_worst_group_preset_states_the_benchmark_protocol():
    config = compose("train", "experiment=celeba_worst_group")
    assert list(config.data.attributes) == ["Blond_Hair"] and list(config.data.balance_groups) == ["Blond_Hair", "Male"]
    assert (
        config.model.backbone == "resnet50" and list(config.data.image_size) == [224, 224] and config.data.crop == 178
    )
    assert config.optimizer._target_ == "torch.optim.SGD" and config.optimizer.momentum == 0.9
    assert (config.optimizer.lr, config.optimizer.weight_decay, config.data.batch_size) == (1e-4, 1e-4, 128)
    assert config.trainer.max_epochs == 50 and config.callbacks.early_stopping is None
    assert not config.data.train_augment
