"""Progress output: a redrawn bar on a terminal; otherwise one log line per epoch (with that epoch's validation
figures) and per test run, or for counted work (prediction, the image cache) one per tenth done; never a carriage
return in a log; nothing from ranks other than zero."""

from __future__ import annotations

import io
import logging
import re
import sys

import lightning as L
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from test_config import compose_train
from test_model import loader, make_module

from faceattr.best_metric import BestMetric
from faceattr.errors import UserError, find_user_error
from faceattr.progress import Progress, format_metrics
from faceattr.training_progress import EpochLines, progress_bar

VAL_METRICS = ("val/loss", "val/auroc", "val/acc", "val/bacc")


class Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize("terminal", [True, False])
def test_auto_mode_draws_the_bar_only_on_a_terminal(monkeypatch, terminal):
    monkeypatch.setattr(sys, "stdout", Stream(terminal))  # where Lightning's TQDM bar writes
    callback = progress_bar(mode="auto", refresh_rate=7)
    if terminal:
        assert isinstance(callback, TQDMProgressBar) and callback.refresh_rate == 7
    else:
        assert isinstance(callback, EpochLines)


def test_explicit_modes_ignore_the_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Stream(terminal=True))
    assert isinstance(progress_bar(mode="lines"), EpochLines)
    monkeypatch.setattr(sys, "stdout", Stream(terminal=False))
    assert isinstance(progress_bar(mode="bar", refresh_rate=3), TQDMProgressBar)


def test_the_config_entry_builds_the_chosen_callback_and_rejects_a_bad_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", Stream(terminal=False))
    assert isinstance(instantiate(compose_train(tmp_path).callbacks.progress_bar), EpochLines)
    bar = instantiate(compose_train(tmp_path, "callbacks.progress_bar.mode=bar").callbacks.progress_bar)
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 10
    with pytest.raises(InstantiationException) as info:
        instantiate(compose_train(tmp_path, "callbacks.progress_bar.mode=fancy").callbacks.progress_bar)
    error = find_user_error(info.value)
    assert isinstance(error, UserError) and str(error) == (
        "callbacks.progress_bar.mode='fancy': choose one of auto, bar, lines"
    )


def test_metrics_are_sorted_to_four_decimals_without_the_step_twin():
    text = format_metrics({"val/loss": 0.123456, "train/loss_step": 0.9, "train/loss_epoch": 0.5, "lr_step": 0.1})
    assert text == "lr_step=0.1000 train/loss_epoch=0.5000 val/loss=0.1235"


def fit_and_test(tmp_path, callback, max_epochs: int, check_val_every_n_epoch: int = 1):
    """Fit test_resnet (3 steps an epoch), then test it; return the trainer and the metrics the fit ended with."""
    trainer = L.Trainer(
        max_epochs=max_epochs,
        check_val_every_n_epoch=check_val_every_n_epoch,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[BestMetric("val/auroc"), callback],  # in train()'s order: val/auroc_best in the epoch's line
    )
    module = make_module()
    trainer.fit(module, train_dataloaders=loader(48), val_dataloaders=loader(32))
    fit_metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.test(module, dataloaders=loader(32), verbose=False)
    return trainer, fit_metrics


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "faceattr.progress"]


def shown(line: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"(\S+)=(\S+)", line)}


@pytest.mark.parametrize("every, validated", [(1, [True, True, True]), (2, [False, True, False])])
def test_one_line_per_epoch_with_that_epochs_validation_and_no_carriage_return(
    tmp_path, caplog, capfd, every, validated
):
    caplog.set_level(logging.INFO, logger="faceattr.progress")
    callback = EpochLines()
    trainer, fit_metrics = fit_and_test(tmp_path, callback, max_epochs=3, check_val_every_n_epoch=every)
    assert trainer.progress_bar_callback is callback  # Lightning added no bar of its own

    lines = progress_lines(caplog)
    assert len(lines) == 4, lines  # three epochs, one test run; nothing per batch
    epochs, test = lines[:3], lines[3]
    for number, (line, has_val) in enumerate(zip(epochs, validated), start=1):
        assert line.startswith(f"epoch {number}/3: step {3 * number}, ")
        metrics = shown(line)
        assert "train/loss_epoch" in metrics and "train/loss_step" not in metrics
        # An epoch without validation shows no validation figures (not the stale ones of an earlier epoch), and the
        # best so far from the first validation on.
        assert all((name in metrics) == has_val for name in VAL_METRICS), line
        assert ("val/auroc_best" in metrics) == any(validated[:number]), line
    # The figures are the epoch's own: the last validated epoch's line shows what the fit ended with.
    last_validated = shown(epochs[max(i for i, v in enumerate(validated) if v)])
    for name in ("val/auroc", "val/acc", "val/loss", "val/auroc_best"):
        assert last_validated[name] == pytest.approx(fit_metrics[name], abs=5e-5)
    best = max(shown(line)["val/auroc"] for line, has_val in zip(epochs, validated) if has_val)
    assert shown(epochs[-1])["val/auroc_best"] == pytest.approx(best, abs=1e-4)
    assert shown(epochs[-1])["train/loss_epoch"] == pytest.approx(fit_metrics["train/loss_epoch"], abs=5e-5)
    assert test.startswith("test: 2 batches, ")
    assert {"test/loss", "test/auroc", "test/acc", "test/bacc"} <= set(shown(test))
    assert float(trainer.callback_metrics["test/auroc"]) == pytest.approx(shown(test)["test/auroc"], abs=5e-5)
    assert all(re.fullmatch(r"\d\.\d{4}", value) for value in re.findall(r"=(\S+)", test))

    out, err = capfd.readouterr()
    assert "\r" not in out + err + "".join(lines)


def test_ranks_other_than_zero_log_nothing(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="faceattr.progress")
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    fit_and_test(tmp_path, EpochLines(), max_epochs=1)
    assert progress_lines(caplog) == []


def test_a_validation_run_of_its_own_is_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="faceattr.progress")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=[EpochLines()]
    )
    trainer.validate(make_module(), dataloaders=loader(32), verbose=False)
    (line,) = progress_lines(caplog)
    assert line.startswith("validation: 2 batches, ") and set(VAL_METRICS) <= set(shown(line))


def test_counted_work_logs_a_line_per_tenth_off_a_terminal(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="faceattr.progress")
    stderr = Stream(terminal=False)
    monkeypatch.setattr(sys, "stderr", stderr)
    with Progress(25, "caching train") as progress:
        for _ in range(25):
            progress.advance()
    lines = progress_lines(caplog)
    assert [int(re.match(r"caching train: (\d+)/25 images \(", line)[1]) for line in lines] == [
        3,
        5,
        8,
        10,
        13,
        15,
        18,
        20,
        23,
        25,
    ]
    assert lines[-1].startswith("caching train: 25/25 images (100%), ") and lines[-1].endswith(" images/s")
    caplog.clear()
    with Progress(100, "predicting", unit="photos") as progress:
        progress.advance(64)  # a step larger than a tenth: one line, not six
        progress.advance(36)
    assert [line.split(" (")[0] for line in progress_lines(caplog)] == ["predicting: 64/100 photos"] + [
        "predicting: 100/100 photos"
    ]
    assert stderr.getvalue() == ""


def test_counted_work_draws_a_bar_on_a_terminal(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="faceattr.progress")
    stderr = Stream(terminal=True)
    monkeypatch.setattr(sys, "stderr", stderr)
    with Progress(10, "predicting", unit="photos") as progress:
        for _ in range(10):
            progress.advance()
    assert "\r" in stderr.getvalue() and "predicting" in stderr.getvalue() and "10/10" in stderr.getvalue()
    assert progress_lines(caplog) == []
