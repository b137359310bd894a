"""Resume after a crash: a SIGKILLed run continues from last.ckpt in its own dir and finishes its epochs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TINY, cli_env, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_sigkilled_run_resumes_in_place_and_finishes(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # Small batches make each epoch last long enough to kill the run in the middle of one.
    args = [
        *TINY,
        f"data.root={synthetic_root}",
        "data.batch_size=8",
        "trainer.max_epochs=3",
        "test=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=cli_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "run.json").exists()

    killed = torch.load(last, map_location="cpu", weights_only=True)  # the kill left a loadable checkpoint
    assert killed["epoch"] < 2 and "rng_states" in killed  # an epoch is left to resume
    killed_at = time.time()

    # The resume in this process (the subprocess was for the kill).
    assert run_main("train.py", f"resume={run_dir}", tmp_path=tmp_path) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3
    assert record["global_step"] > killed["global_step"]
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == record["global_step"]
    # The optimizer's state came back too: AdamW counts its own steps per parameter, and a resume that restored only
    # the weights (fresh moments, a fresh step count) would count the resumed steps alone.
    adam_steps = {float(state["step"]) for state in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {float(record["global_step"])}
    # Same TensorBoard run, val/auroc continuing: one value per epoch at the step that epoch ended on, the resumed
    # epochs written after the kill into the same folder (a restart from scratch would log epoch 0 again; a resume
    # that lost the step counter would log the resumed epochs at the killed run's steps).
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    per_epoch = record["global_step"] // 3
    by_step: dict[int, list[float]] = {}
    for event in events.Scalars("val/auroc"):
        by_step.setdefault(event.step, []).append(event.wall_time)
    assert sorted(by_step) == [per_epoch * epoch - 1 for epoch in (1, 2, 3)], sorted(by_step)  # steps count from 0
    done_at_kill = killed["epoch"] + 1  # last.ckpt of epoch e says epoch=e
    steps = sorted(by_step)
    assert all(max(by_step[step]) < killed_at for step in steps[:done_at_kill])  # not logged again by the resume
    assert all(max(by_step[step]) > killed_at for step in steps[done_at_kill:])  # the resumed epochs
    # One best score across the kill: the checkpointed best and the resumed epochs' val/auroc (the newest value of
    # each step: an epoch the kill cut short ran again).
    resumed = {e.step: e.value for e in sorted(events.Scalars("val/auroc"), key=lambda e: e.wall_time)}
    best = max(
        [killed["callbacks"]["BestMetric{metric=val/auroc}"]["best"]]
        + [value for step, value in resumed.items() if step > killed["global_step"]]
    )
    assert events.Scalars("val/auroc_best")[-1].value == pytest.approx(best, abs=1e-6)
    assert record["best_score"] == pytest.approx(best, abs=1e-6)


def test_resume_rejects_a_group_change_and_a_missing_run(tmp_path, tiny_run, capsys):
    assert run_main("train.py", f"resume={tiny_run}", "model=resnet18", tmp_path=tmp_path) == 2
    assert "takes the run's own config; drop model=resnet18" in capsys.readouterr().err
    assert run_main("train.py", f"resume={tmp_path / 'nowhere'}", tmp_path=tmp_path) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "config.yaml" in err


def test_a_moved_run_dir_resumes_into_itself(tmp_path, tiny_run):
    """config.yaml is saved resolved: its checkpoint and event paths name the dir the run was made in."""
    import shutil

    from omegaconf import OmegaConf

    from faceattr.resume import resumed_config

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tiny_run, moved, ignore=shutil.ignore_patterns("export", "eval"))
    cfg = resumed_config(moved, ["trainer.max_epochs=3"], set())
    assert cfg.callbacks.model_checkpoint.dirpath == str(moved.resolve() / "checkpoints")
    assert cfg.logger.tensorboard.save_dir == str(moved.resolve() / "tensorboard")
    assert str(tiny_run.resolve()) not in OmegaConf.to_yaml(cfg) and cfg.trainer.max_epochs == 3


def test_last_ckpt_is_the_latest_epoch_even_when_the_score_stops_improving(tmp_path):
    """conf/callbacks/default.yaml: last.ckpt is rewritten every epoch (Lightning 2.6's save_last writes it only in
    epochs that saved a best checkpoint, so it stayed at the last improvement and resume= went back there)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.demos.boring_classes import BoringModel
    from omegaconf import OmegaConf

    from faceattr.checkpoint_io import AtomicCheckpointIO

    class Flat(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/auroc", 0.5)  # never improves after the first epoch

    config = OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml")
    config = OmegaConf.merge(
        config, {"progress_bar": None, "pictures": None, "early_stopping": None, "lr_monitor": None}
    )
    OmegaConf.update(config, "model_checkpoint.monitor", "val/auroc")
    OmegaConf.update(config, "model_checkpoint.mode", "max")
    for node in config.values():
        if node is not None and "dirpath" in node:
            node.dirpath = str(tmp_path / "checkpoints")
    callbacks = [instantiate(node) for node in config.values() if node is not None]
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=2,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Flat())
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert trainer.global_step == 12 and last["global_step"] == 12 and last["epoch"] == 2
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch*.ckpt")] == ["epoch000-auroc0.5000.ckpt"]
