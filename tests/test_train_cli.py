"""`python train.py` end to end (tiny model, generated data) and its one-line errors."""

from __future__ import annotations

import json
import runpy
import sys

import pytest
import torch
from conftest import REPO, TINY, run_cli, run_main
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
    # One best score: val/auroc_best is the best epoch so far at every epoch, and run.json's best_score the last.
    aurocs = values(events, "val/auroc")
    assert values(events, "val/auroc_best") == pytest.approx([max(aurocs[: i + 1]) for i in range(2)], abs=1e-6)
    assert record["best_score"] == pytest.approx(max(aurocs), abs=1e-6) and "val_auroc_best" not in record

    config = (tiny_run / "config.yaml").read_text()
    assert "backbone: test_resnet" in config and "${" not in config


def values(events: EventAccumulator, tag: str) -> list[float]:
    return [event.value for event in events.Scalars(tag)]


def test_run_prints_where_everything_is(tmp_path, synthetic_root, capsys):
    run_dir = tmp_path / "run"
    overrides = (*TINY, f"data.root={synthetic_root}", "trainer.max_epochs=1", "test=false")
    assert run_main("train.py", *overrides, f"hydra.run.dir={run_dir}", tmp_path=tmp_path) == 0
    out = capsys.readouterr().out
    assert f"run dir:         {run_dir}" in out
    assert "best checkpoint: " in out and "(val/auroc=0." in out
    assert f"tensorboard --logdir {run_dir}" in out


def test_fast_dev_run_smoke(tmp_path, synthetic_root, capfd):
    run_dir = tmp_path / "run"
    overrides = (*TINY, f"data.root={synthetic_root}", "debug=fdr", f"hydra.run.dir={run_dir}")
    assert run_main("train.py", *overrides, tmp_path=tmp_path) == 0
    captured = capfd.readouterr()
    # What fast_dev_run does (Lightning's log line depends on the logging setup earlier tests left): one batch
    # trained, no checkpoint written, and the summary says so.
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["global_step"] == 1
    assert not list(run_dir.glob("checkpoints/*.ckpt")) and "best checkpoint: none saved" in captured.out


def test_resume_from_last_checkpoint_continues_training(tmp_path, tiny_run, synthetic_root):
    run_dir = tmp_path / "resumed"
    status = run_main(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=3",
        f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp_path,
    )
    assert status == 0
    record = json.loads((run_dir / "run.json").read_text())
    first = json.loads((tiny_run / "run.json").read_text())
    assert record["epochs"] == 3 and record["global_step"] > first["global_step"]
    # Continued, not started over (3 epochs from scratch end at the same step): only epoch 2 was trained here.
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("val/auroc")) == 1
    # The best of the first part counts: BestMetric's state came with the checkpoint.
    before = EventAccumulator(str(tiny_run / "tensorboard"))
    before.Reload()
    best = max(values(before, "val/auroc") + values(events, "val/auroc"))
    assert values(events, "val/auroc_best") == pytest.approx([best], abs=1e-6)
    assert record["best_score"] == pytest.approx(best, abs=1e-6)


USER_ERRORS = [
    (["data=celeba", "data.root=/nowhere"], "data.root /nowhere does not exist"),
    (["trainer.gpus=1"], "no CUDA device is visible"),
    (["model.backbone=no_such_net"], "model.backbone=no_such_net is not a timm model name"),
    (["ckpt_path=/nope.ckpt"], "ckpt_path=/nope.ckpt: no such checkpoint file"),
    (["data.attributes=[Smilling]"], "unknown attribute(s) Smilling"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected null or an integer >= 1 (or -1: no limit)"),
    (["data.image_size=abc"], "the data config has a bad value: a size must be a positive int"),
    (["trainer.precision=17"], "the trainer config has a bad value: Precision 17 is invalid"),
]


@pytest.mark.parametrize("overrides, message", USER_ERRORS)
def test_user_errors_are_one_clear_line(tmp_path, synthetic_root, overrides, message, capsys):
    """In process (fast): train.py's main on the composed config ends with status 2 and one line `error: ...`."""
    status = run_main(
        "train.py", *TINY, f"data.root={synthetic_root}", *overrides, f"hydra.run.dir={tmp_path}", tmp_path=tmp_path
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and lines == [lines[0]] and lines[0].startswith("error: ") and message in lines[0], lines


def test_user_errors_end_the_cli_with_one_line_and_status_2(tmp_path, synthetic_root):
    """The script itself, in its own process: exit status 2, one line on stderr, no traceback."""
    overrides, message = USER_ERRORS[0]
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


def test_override_typo_fails_in_one_line_before_hydra(tmp_path, monkeypatch, capsys):
    """`python train.py modell=resnet18` run as __main__ in this process: the typo is one line (the command line is
    checked before Hydra runs, as for every entry script), exit status 2."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), "modell=resnet18", f"hydra.run.dir={tmp_path}"])
    try:
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: unknown train option 'modell'; valid: seed, ckpt_path, resume, monitor.metric")


def test_checkpoint_of_another_backbone_is_refused(tmp_path, tiny_run, synthetic_root, capsys):
    common = (*TINY, f"data.root={synthetic_root}", f"hydra.run.dir={tmp_path}")
    status = run_main(
        "train.py", *common, "model=tiny_vit", f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", tmp_path=tmp_path
    )
    assert status == 2
    assert "was trained with backbone=test_resnet but the config has backbone=test_vit" in capsys.readouterr().err
    status = run_main("train.py", *common, f"ckpt_path={synthetic_root / 'list_attr_celeba.txt'}", tmp_path=tmp_path)
    assert status == 2 and "is not a loadable checkpoint" in capsys.readouterr().err
