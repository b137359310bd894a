"""Training-loop overhead: Lightning ``Trainer.fit`` against a hand-written PyTorch loop doing the same work.

Both train the quickstart model (``FaceAttrModule``, its backbone, AdamW param groups and the per-step cosine
schedule of ``experiment=quickstart``) on the same uint8 batches already in memory (a ``DataLoader`` over a list,
so loading costs nothing and the same on both sides). The hand-written loop does what ``training_step`` and
Lightning's automatic optimization do: ``float()/255``, forward, BCE loss, ``zero_grad``, ``backward``, ``step``,
scheduler step, and reads the loss as a float every ``log_every_n_steps`` (what a progress print costs).

The Lightning side runs as the project's trainer does on a run (the TensorBoard logger writing ``train/loss`` and
the learning rate every ``log_every_n_steps``), minus what happens outside the timed steps (validation,
checkpoints) and the progress bar (a terminal widget; it is reported separately as ``lightning_progress_bar``).
Steps/s are steady-state: 1 / the median time from the end of one step to the end of the next, after the warm-up
steps, so ``fit``'s own start-up (reported as ``fit_startup_s``) is not in them and a burst of background load in a
few steps does not move them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Collection
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, TQDMProgressBar
from torch.utils.data import DataLoader

from benchmarks.common import Settings
from benchmarks.timing import interleaved, median


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (an accelerator runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    """What Lightning's ``precision`` does around the forward pass and the loss: ``32-true`` or ``bf16-mixed``."""
    if precision not in ("32-true", "bf16-mixed"):
        raise ValueError(f"precision={precision!r}: the hand-written loop does 32-true or bf16-mixed")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


class StepTimer(Callback):
    """Wall-clock time at the end of every training step; after the steps in ``sync_after`` (indices from 0) the
    device is synchronized first, so that a window between two of them times the device's work, not its queueing."""

    def __init__(self, sync_after: Collection[int] = ()) -> None:
        self.sync_after = frozenset(sync_after)
        self.ends: list[float] = []
        self.fit_started = 0.0
        self.first_step_started = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.first_step_started:
            self.first_step_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx in self.sync_after:
            synchronize(pl_module.device)
        self.ends.append(time.perf_counter())


def step_durations(ends: list[float], warmup: int) -> list[float]:
    """Seconds of each step after the ``warmup`` first ones (end of a step to the end of the next)."""
    timed = ends[warmup - 1 :] if warmup > 0 else ends
    return [b - a for a, b in zip(timed, timed[1:])]


def steady_steps_per_s(ends: list[float], warmup: int) -> float:
    """1 / the median step time: a burst of background load in a few steps does not move it."""
    durations = step_durations(ends, warmup)
    return 1.0 / median(durations) if durations else float("nan")


def _batches(count: int, batch_size: int, image_size, num_attributes: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 256, (batch_size, 3, *image_size), dtype=torch.uint8, generator=generator),
            torch.randint(0, 2, (batch_size, num_attributes), dtype=torch.uint8, generator=generator),
            0,
        )
        for _ in range(count)
    ]


def _model(cfg, total_steps: int):
    from hydra.utils import instantiate

    from faceattr.attributes import CELEBA_ATTRIBUTES

    torch.manual_seed(0)
    return instantiate(
        cfg.model,
        attributes=list(CELEBA_ATTRIBUTES),
        image_size=cfg.data.image_size,
        crop=cfg.data.crop,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        _convert_="all",
    )


def raw_loop(
    model,
    loader,
    total_steps: int,
    log_every: int,
    device: torch.device | None = None,
    precision: str = "32-true",
    sync_after: Collection[int] = (),
) -> list[float]:
    """The hand-written loop; returns the time at the end of every step. On ``device`` (the model already there)
    each batch is copied to it as Lightning does (``non_blocking``); ``precision`` and ``sync_after`` as in
    :func:`autocast` and :class:`StepTimer`."""
    from timm.optim import param_groups_weight_decay

    device = device or torch.device("cpu")
    weight_decay = getattr(model.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
    optimizer = model.optimizer_factory(param_groups_weight_decay(model.net, weight_decay))
    scheduler = model.scheduler_factory(optimizer, total_steps=total_steps) if model.scheduler_factory else None
    model.train()
    ends = []
    logged = []
    for step, (images, labels, _) in enumerate(loader):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images, labels = images.float().div_(255), labels.float()
        with autocast(device, precision):
            loss = model.loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if (step + 1) % log_every == 0:
            logged.append(loss.item())
        if step in sync_after:
            synchronize(device)
        ends.append(time.perf_counter())
    return ends


def lightning_fit(
    model,
    loader,
    total_steps: int,
    log_every: int,
    log_dir: str,
    progress_bar: bool,
    accelerator: str = "cpu",
    precision: str = "32-true",
    sync_after: Collection[int] = (),
):
    from lightning.pytorch.loggers import TensorBoardLogger

    timer = StepTimer(sync_after)
    callbacks: list[Callback] = [timer, LearningRateMonitor(logging_interval="step")]
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=total_steps,
        max_epochs=1,
        logger=TensorBoardLogger(log_dir),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=log_every,
    )
    started = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    return timer, timer.first_step_started - started


@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Send a file descriptor to /dev/null (what native code or a saved stream object writes there)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def run(settings: Settings, cfg, log=print) -> dict[str, Any]:
    import io
    import logging
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    total = settings.train_warmup_steps + settings.train_steps
    batch_size = int(cfg.data.batch_size)
    image_size = list(cfg.data.image_size) if not isinstance(cfg.data.image_size, int) else [cfg.data.image_size] * 2
    log_every = int(cfg.trainer.get("log_every_n_steps", 50))
    batches = _batches(total, batch_size, image_size, 40)
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    variants = ["raw", "lightning"] + (["lightning_progress_bar"] if settings.train_progress_bar else [])
    models = {name: _model(cfg, total) for name in variants}
    startup: list[float] = []
    log_dir = tempfile.mkdtemp(prefix="faceattr-bench-tb-")

    def raw() -> float:
        return steady_steps_per_s(raw_loop(models["raw"], loader, total, log_every), settings.train_warmup_steps)

    def lightning(progress_bar: bool):
        def rep() -> float:
            # The progress bar writes to stdout, Lightning's notices to stderr: neither belongs in the benchmark's
            # output.
            with (
                _quiet_fd(1),
                _quiet_fd(2),
                warnings.catch_warnings(),
                redirect_stdout(io.StringIO()),
                redirect_stderr(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                timer, fit_startup = lightning_fit(
                    models["lightning_progress_bar" if progress_bar else "lightning"],
                    loader,
                    total,
                    log_every,
                    log_dir,
                    progress_bar,
                )
            if not progress_bar:
                startup.append(fit_startup)
            return steady_steps_per_s(timer.ends, settings.train_warmup_steps)

        return rep

    level = logging.getLogger("lightning.pytorch").level
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        candidates = {"raw": raw, "lightning": lightning(False), "lightning_progress_bar": lightning(True)}
        reps = interleaved({name: candidates[name] for name in variants}, settings.train_repetitions, warmup=1)
    finally:
        logging.getLogger("lightning.pytorch").setLevel(level)
    result = {
        "backbone": str(cfg.model.backbone),
        "batch_size": batch_size,
        "image_size": image_size,
        "optimizer": str(cfg.optimizer._target_),
        "steps_timed": settings.train_steps,
        "warmup_steps": settings.train_warmup_steps,
        "log_every_n_steps": log_every,
        "threads": torch.get_num_threads(),
        "raw_steps_s": median(reps["raw"]),
        "lightning_steps_s": median(reps["lightning"]),
        "lightning_progress_bar_steps_s": median(reps.get("lightning_progress_bar", [])),
        "raw_reps": [round(v, 4) for v in reps["raw"]],
        "lightning_reps": [round(v, 4) for v in reps["lightning"]],
        "lightning_progress_bar_reps": [round(v, 4) for v in reps.get("lightning_progress_bar", [])],
        "fit_startup_s": round(median(startup), 3) if startup else None,
    }
    result["raw_img_s"] = result["raw_steps_s"] * batch_size
    result["lightning_img_s"] = result["lightning_steps_s"] * batch_size
    log(
        f"  steps/s: raw {result['raw_steps_s']:.3f}, lightning {result['lightning_steps_s']:.3f}"
        + (
            f", lightning+progress bar {result['lightning_progress_bar_steps_s']:.3f}"
            if settings.train_progress_bar
            else ""
        )
        + f" ({result['raw_img_s']:.0f} img/s raw)"
    )
    return result
