"""Every option of every config group composes, and instantiates into the objects train.py builds."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from faceattr.config.schemas import GROUPS as TRAIN_GROUPS
from faceattr.config_checks import check_types
from faceattr.data import CelebADataModule
from faceattr.model import FaceAttrModule
from faceattr.training import instantiate_group, resolve_trainer_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(tmp_path: Path, *overrides: str):
    """Compose conf/train.yaml like `python train.py` would, with the run dir under tmp_path."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])


MODEL_OPTIONS = [m for m in options("model") if m != "timm_classifier"]


def test_groups_have_the_promised_options():
    assert {"celeba", "synthetic"} <= set(options("data"))
    assert {
        "resnet18",
        "resnet34",
        "resnet50",
        "efficientnet_b0",
        "convnext_tiny",
        "vit_small",
        "tiny_resnet",
        "tiny_vit",
    } <= set(MODEL_OPTIONS)
    assert {"adamw", "sgd"} <= set(options("optimizer"))
    assert {"cosine", "none"} <= set(options("scheduler"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"tensorboard", "csv"} <= set(options("logger"))
    assert {"quickstart"} <= set(options("experiment"))
    assert {"fdr", "overfit"} <= set(options("debug"))


#: The groups of conf/train.yaml, as its schema registry lists them (the one list).
GROUPS = TRAIN_GROUPS["train"]
#: Folders of conf/ that are not groups of the training config (Hydra's own, the paths, other entries' configs).
NOT_TRAIN_GROUPS = {"hydra", "paths", "serve", "predict", "export"}


def test_the_schema_lists_every_group_of_the_training_config():
    folders = {p.name for p in (Path(__file__).resolve().parents[1] / "conf").iterdir() if p.is_dir()}
    assert set(GROUPS) == folders - NOT_TRAIN_GROUPS


@pytest.mark.parametrize("group, option", [(group, option) for group in GROUPS for option in options(group)])
def test_every_option_passes_the_schema_check(tmp_path, group, option):
    """Every shipped option types its keys as faceattr/config/train.py's TrainConfig says."""
    check_types(compose_train(tmp_path, f"{group}={option}"))


@pytest.mark.parametrize("model", MODEL_OPTIONS)
def test_every_model_option_instantiates_and_runs(tmp_path, model):
    cfg = compose_train(tmp_path, f"model={model}", "data.image_size=32")
    net = instantiate(
        cfg.model,
        attributes=["Smiling", "Male"],
        image_size=[32, 32],
        optimizer=instantiate(cfg.optimizer),
        _convert_="all",
    )
    assert isinstance(net, FaceAttrModule)
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizers_and_schedulers_instantiate(tmp_path, optimizer, scheduler):
    cfg = compose_train(tmp_path, f"optimizer={optimizer}", f"scheduler={scheduler}")
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = instantiate(cfg.optimizer)(params)
    assert isinstance(opt, torch.optim.Optimizer)
    if cfg.get("scheduler"):
        sched = instantiate(cfg.scheduler)(opt, total_steps=100)
        lrs = []
        for _ in range(100):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[0] < lrs[10] and max(lrs) == pytest.approx(cfg.optimizer.lr, rel=0.05) and lrs[-1] < lrs[50]


@pytest.mark.parametrize("data", options("data"))
def test_data_options_instantiate(tmp_path, data):
    cfg = compose_train(tmp_path, f"data={data}")
    datamodule = instantiate(cfg.data, _convert_="all")
    assert isinstance(datamodule, CelebADataModule)
    assert datamodule.attribute_names is None  # attributes=null: the data's columns, known after setup


@pytest.mark.parametrize("trainer", ["default", "cpu", "ddp"])
def test_trainer_options_instantiate_with_callbacks_and_loggers(tmp_path, trainer):
    cfg = compose_train(
        tmp_path, f"trainer={trainer}", "trainer.accelerator=cpu", "logger=many", "callbacks.progress_bar.mode=lines"
    )  # mode=auto would depend on stdout being a terminal
    callbacks = instantiate_group(cfg.callbacks)
    loggers = instantiate_group(cfg.logger)
    assert {type(c).__name__ for c in callbacks} == {
        "ModelCheckpoint",
        "EarlyStopping",
        "LearningRateMonitor",
        "EpochLines",
        "TensorBoardPictures",
        "ModelSummary",
    }
    assert {type(lg).__name__ for lg in loggers} == {"TensorBoardLogger", "CSVLogger"}
    trainer_obj = instantiate(resolve_trainer_config(cfg.trainer), callbacks=callbacks, logger=loggers)
    assert isinstance(trainer_obj, L.Trainer)
    assert trainer_obj.checkpoint_callback.monitor == "val/auroc"


def test_gpu_trainer_composes_to_bf16_on_one_gpu(tmp_path):
    cfg = compose_train(tmp_path, "trainer=gpu")
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("gpu", 1, "bf16-mixed")


def test_gpus_flag_maps_to_accelerator_and_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = compose_train(tmp_path, "trainer.gpus=2")
    resolved = resolve_trainer_config(cfg.trainer)
    assert "gpus" not in resolved and (resolved.accelerator, resolved.devices) == ("gpu", 2)
    assert resolve_trainer_config(compose_train(tmp_path, "trainer.gpus=0").trainer).accelerator == "cpu"


#: What each debug option changes in the default training config (key path -> value), written out here: a debug
#: option that sets a wrong key, a wrong value or more than it says fails.
DEBUG_CHANGES = {
    "anomaly": {"trainer.detect_anomaly": True},
    "fdr": {"trainer.fast_dev_run": True, "test": False},
    "limit": {
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 5,
        "trainer.limit_val_batches": 2,
        "trainer.limit_test_batches": 2,
    },
    "overfit": {
        "trainer.overfit_batches": 4,
        "trainer.max_epochs": 50,
        "callbacks.early_stopping": None,
        "data.train_augment": [],
    },
    "profiler": {
        "test": False,
        "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 20,
        "trainer.limit_val_batches": 5,
        "trainer.profiler": {
            "_target_": "lightning.pytorch.profilers.PyTorchProfiler",
            "dirpath": None,
            "filename": "profile",
            "export_to_chrome": True,
        },
    },
}


def _changes(before: dict, after: dict, prefix: str = "") -> dict:
    """``{"a.b": value}`` for every leaf (or whole subtree) of ``after`` that differs from ``before``."""
    changes = {}
    for key in before.keys() | after.keys():
        old, new = before.get(key, "<absent>"), after.get(key, "<absent>")
        if isinstance(old, dict) and isinstance(new, dict):
            changes.update(_changes(old, new, f"{prefix}{key}."))
        elif old != new:
            changes[f"{prefix}{key}"] = new
    return changes


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options_change_exactly_what_they_say(tmp_path, debug):
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(compose_train(tmp_path), resolve=False)
    debugged = compose_train(tmp_path, f"debug={debug}")
    assert _changes(plain, OmegaConf.to_container(debugged, resolve=False)) == DEBUG_CHANGES[debug]
    assert isinstance(instantiate(resolve_trainer_config(debugged.trainer), logger=False), L.Trainer)


def test_every_debug_option_is_described():
    assert sorted(DEBUG_CHANGES) == options("debug")


def test_quickstart_uses_generated_data_on_the_cpu(tmp_path):
    cfg = compose_train(tmp_path, "experiment=quickstart")
    assert cfg.data.synthetic.num_images > 0 and cfg.trainer.accelerator == "cpu"
    assert "synthetic-celeba" in cfg.data.root


def test_vit_is_built_for_the_data_image_size(tmp_path):
    cfg = compose_train(tmp_path, "model=vit_small", "data.image_size=48")
    assert cfg.model.backbone_kwargs.img_size == 48
