"""faceattr/lightning_workarounds.py against the installed Lightning: the pinned version, the behaviour of
Lightning's child-process observer that it disarms, and the model summary's FLOPs column that it shows only when
measured. A Lightning upgrade that changes any of them fails here first."""

from __future__ import annotations

import subprocess
import sys
import threading

import lightning
import torch
from conftest import REPO
from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

from faceattr.lightning_workarounds import (
    LIGHTNING_VERSION,
    MEASURED_COLUMNS,
    OBSERVER_THREAD,
    ModelSummary,
    disarm_process_observers,
)


def test_lightning_is_the_pinned_version():
    assert lightning.__version__ == LIGHTNING_VERSION
    assert f'"lightning=={LIGHTNING_VERSION}"' in (REPO / "pyproject.toml").read_text()


def _failed_rank() -> subprocess.Popen:
    rank = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    rank.wait()
    return rank


def _watch(rank: subprocess.Popen) -> tuple[threading.Thread, subprocess.Popen]:
    """Lightning's observer of ``rank``, with a stand-in for the launching process (this one, in a DDP job) as
    the process it kills."""
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    observer = _ChildProcessObserver(main_pid=launcher.pid, child_processes=[rank], sleep_period=1)
    observer.start()
    return observer, launcher


def test_the_observer_kills_the_launcher_when_a_rank_fails_unless_disarmed():
    before = set(threading.enumerate())
    observer, launcher = _watch(_failed_rank())
    assert observer.name == OBSERVER_THREAD
    observer.join(timeout=10)
    assert launcher.wait(timeout=10) == -9  # what a sweep's next job would suffer: SIGKILL

    rank = _failed_rank()
    observer, launcher = _watch(rank)
    assert disarm_process_observers(before) == [rank]  # the failed rank, to be waited for by the caller
    observer.join(timeout=10)
    try:
        assert not observer.is_alive() and launcher.poll() is None  # it ended without killing anyone
    finally:
        launcher.kill()
        launcher.wait()


class _Tiny(lightning.LightningModule):
    """One linear layer trained for one step on four random rows; with ``example`` its example input array."""

    def __init__(self, example: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 2)
        self.example_input_array = torch.zeros(1, 8) if example else None

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 8)), batch_size=4)


def _summary_printed(callback: lightning.Callback | None, example: bool, capsys) -> str:
    """What fitting :class:`_Tiny` prints with ``callback`` as its model summary (None: Lightning's default)."""
    trainer = lightning.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[callback] if callback else None,
    )
    capsys.readouterr()
    trainer.fit(_Tiny(example))
    return capsys.readouterr().out


def test_lightning_prints_a_flops_column_it_did_not_measure(capsys):
    """Why ModelSummary exists: Lightning's default summary shows FLOPs of 0 for a model without an example input,
    and measures them (the In/Out sizes columns appear too) only with one."""
    unmeasured = _summary_printed(None, example=False, capsys=capsys)
    assert "FLOPs" in unmeasured and "Total FLOPs: 0" in unmeasured and "In sizes" not in unmeasured
    measured = _summary_printed(None, example=True, capsys=capsys)
    assert all(column in measured for column in MEASURED_COLUMNS) and "Total FLOPs: 32" in measured  # 2 x 8 x 2


def test_model_summary_shows_flops_only_when_measured(capsys):
    unmeasured = _summary_printed(ModelSummary(), example=False, capsys=capsys)
    assert "flops" not in unmeasured.lower()
    for line in ("layer", "Linear", "Params", "Mode", "Total params: 18", "Trainable params: 18", "Modules in train"):
        assert line in unmeasured, unmeasured
    measured = _summary_printed(ModelSummary(), example=True, capsys=capsys)
    assert "FLOPs" in measured and "Total FLOPs: 32" in measured and "In sizes" in measured
    assert _summary_printed(ModelSummary(max_depth=0), example=False, capsys=capsys).strip() == ""
