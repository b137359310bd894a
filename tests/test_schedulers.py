"""The learning-rate schedule: warm-up then cosine, and what resuming or extending a run does to it."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from test_model import ATTRS, loader

from faceattr.model import FaceAttrModule
from faceattr.model.schedulers import cosine_with_warmup


def _lrs(scheduler, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_warmup_then_cosine_down_to_the_floor():
    values = _lrs(cosine_with_warmup(_optimizer(), total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.01), 120)
    assert values[0] == pytest.approx(1e-3) and values[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))  # warm-up rises
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then never rises
    assert values[55] == pytest.approx(0.01 + 0.99 * 0.5) and values[100:] == pytest.approx([0.01] * 20)


@pytest.mark.parametrize("resumed_at", [30, 60, 5])
def test_extending_a_run_continues_the_decay_instead_of_restarting_it(resumed_at):
    old = cosine_with_warmup(_optimizer(), total_steps=100, warmup_fraction=0.1)
    before = _lrs(old, resumed_at)
    state = old.state_dict()
    # The resumed run plans 200 steps, then restores the optimizer's and the scheduler's states, as Lightning does.
    optimizer = _optimizer()
    new = cosine_with_warmup(optimizer, total_steps=200, warmup_fraction=0.1)
    optimizer.load_state_dict(old.optimizer.state_dict())
    new.load_state_dict(state)
    after = _lrs(new, 200 - resumed_at + 10)
    curve = before + after
    peak = curve.index(max(curve))
    assert all(a >= b - 1e-12 for a, b in zip(curve[peak:], curve[peak + 1 :])), "the lr rose after warm-up"
    assert after[0] == pytest.approx(old.optimizer.param_groups[0]["lr"])  # continuous at the boundary
    assert curve[199] == pytest.approx(0.01, abs=1e-3) and curve[150] > 0.01  # decays over the new length


def test_lightning_resume_with_more_epochs_never_raises_the_lr(tmp_path):
    """The README's `resume=<run> trainer.max_epochs=<more>`, in process: fit 2 epochs, then to 5 from last.ckpt."""

    class RecordLR(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.values.append(trainer.optimizers[0].param_groups[0]["lr"])

    def fit(max_epochs: int, ckpt_path=None) -> list[float]:
        module = FaceAttrModule(
            backbone="test_resnet",
            attributes=ATTRS,
            image_size=32,
            optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
            scheduler=functools.partial(cosine_with_warmup, warmup_fraction=0.2),
        )
        record = RecordLR()
        trainer = L.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            logger=False,
            callbacks=[record],
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, train_dataloaders=loader(64), val_dataloaders=loader(16), ckpt_path=ckpt_path)
        trainer.save_checkpoint(tmp_path / "last.ckpt")
        return record.values

    first = fit(2)
    second = fit(5, ckpt_path=tmp_path / "last.ckpt")
    curve = first + second
    assert len(first) == 8 and len(second) == 12
    peak = curve.index(max(curve))
    assert peak < len(first)
    assert all(a >= b - 1e-12 for a, b in zip(curve[peak:], curve[peak + 1 :])), curve
    assert second[0] <= first[-1] and second[-1] < 0.2 * max(curve)
