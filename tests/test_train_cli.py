"""`python train.py` end to end (tiny model, generated data) and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO, TINY, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_tiny_run_leaves_checkpoints_events_config_and_record(tiny_run):
    record = json.loads((tiny_run / "run.json").read_text())
    assert record["status"] == "completed" and record["backbone"] == "test_resnet" and record["epochs"] == 2
    best = tiny_run / "checkpoints" / record["best_checkpoint"].rsplit("/", 1)[-1]
    assert best.is_file() and best.name.startswith("epoch") and (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert 0.0 <= record["best_score"] <= 1.0 and record["test"]["test/auroc"] > 0
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["backbone"] == "test_resnet" and len(ckpt["hyper_parameters"]["attributes"]) == 40

    events = EventAccumulator(str(tiny_run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "val/loss", "val/auroc", "val/acc", "val/f1", "val/auroc_best", "test/auroc"} <= scalars
    assert "val/auroc/Smiling" in scalars and "test/auroc/Male" in scalars
    assert len(events.Scalars("val/auroc")) == 2

    config = (tiny_run / "config.yaml").read_text()
    assert "backbone: test_resnet" in config and "${" not in config


def test_run_prints_where_everything_is(tmp_path, synthetic_root):
    proc = run_cli(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp_path=tmp_path,
    )
    out = proc.stdout
    assert f"run dir:         {tmp_path / 'run'}" in out
    assert "best checkpoint: " in out and "(val/auroc=0." in out
    assert f"tensorboard --logdir {tmp_path / 'run'}" in out


def test_fast_dev_run_smoke(tmp_path, synthetic_root):
    proc = run_cli(
        "train.py", *TINY, f"data.root={synthetic_root}", "debug=fdr", f"hydra.run.dir={tmp_path}", tmp_path=tmp_path
    )
    assert "fast_dev_run" in proc.stdout + proc.stderr


def test_resume_from_last_checkpoint_continues_training(tmp_path, tiny_run, synthetic_root):
    run_dir = tmp_path / "resumed"
    run_cli(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=3",
        f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp_path,
    )
    record = json.loads((run_dir / "run.json").read_text())
    first = json.loads((tiny_run / "run.json").read_text())
    assert record["epochs"] == 3 and record["global_step"] > first["global_step"]


USER_ERRORS = [
    (["data=celeba", "data.root=/nowhere"], "data.root /nowhere does not exist"),
    (["trainer.gpus=1"], "no CUDA device is visible"),
    (["model.backbone=no_such_net"], "model.backbone=no_such_net is not a timm model name"),
    (["ckpt_path=/nope.ckpt"], "ckpt_path=/nope.ckpt: no such checkpoint file"),
    (["data.attributes=[Smilling]"], "unknown attribute(s) Smilling"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected an integer"),
    (["data.image_size=abc"], "the data config has a bad value: a size must be a positive int"),
    (["trainer.precision=17"], "the trainer config has a bad value: Precision 17 is invalid"),
]


@pytest.mark.parametrize("overrides, message", USER_ERRORS)
def test_user_errors_are_one_clear_line(tmp_path, synthetic_root, overrides, message):
    """In process (fast): train() on the composed config fails with a UserError whose one line says it all."""
    from hydra import compose, initialize_config_dir

    from faceattr.errors import find_user_error, one_line
    from faceattr.training import train

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", [*TINY, f"data.root={synthetic_root}", *overrides, f"paths.output_dir={tmp_path}"])
    with pytest.raises(Exception) as failure:
        train(cfg)
    error = find_user_error(failure.value)
    assert error is not None, failure.value
    assert message in one_line(error) and "\n" not in one_line(error)


@pytest.mark.parametrize("overrides, message", [USER_ERRORS[0], USER_ERRORS[5]])
def test_user_errors_end_the_cli_with_one_line_and_status_2(tmp_path, synthetic_root, overrides, message):
    proc = run_cli(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        *overrides,
        f"hydra.run.dir={tmp_path}",
        tmp_path=tmp_path,
        check=False,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [lines[0]] and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_override_typo_fails_with_hydras_message(tmp_path):
    proc = run_cli("train.py", "modell=resnet18", f"hydra.run.dir={tmp_path}", tmp_path=tmp_path, check=False)
    assert proc.returncode == 1 and "Could not override 'modell'" in proc.stderr


def test_checkpoint_of_another_backbone_is_refused(tmp_path, tiny_run, synthetic_root):
    proc = run_cli(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "model=tiny_vit",
        f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path}",
        tmp_path=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "was trained with backbone=test_resnet but the config has backbone=test_vit" in proc.stderr
    proc = run_cli(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        f"ckpt_path={synthetic_root / 'list_attr_celeba.txt'}",
        f"hydra.run.dir={tmp_path}",
        tmp_path=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "is not a loadable checkpoint" in proc.stderr
