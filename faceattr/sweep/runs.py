"""Read run directories: ``run.json`` (written by training), the configs, and TensorBoard events.

A *run directory* is a folder holding ``run.json`` or a Hydra ``.hydra/`` folder (a run that started), or else a
folder of TensorBoard event files outside any such run (a run made by other means). Events are read with
TensorBoard's own ``EventAccumulator``: the ``val/auroc`` curve, the last ``val/auroc_best`` and ``test/*`` values,
and the HParams session data, which also fill in what a missing ``run.json`` (a killed job) cannot say.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceattr.errors import UserError
from faceattr.layout import RUN_CONFIG, RUN_RECORD
from faceattr.numbers import finite_or_none
from faceattr.run_record import RunRecord, Status, read_run_record

EVENTS_GLOB = "events.out.tfevents.*"
CURVE_TAG = "val/auroc"
BEST_TAG = "val/auroc_best"
TEST_TAGS = ("test/auroc", "test/acc", "test/bacc", "test/f1", "test/loss")
HPARAMS_PLUGIN = "hparams"
#: The keys whose values make repeats of one configuration: runs that differ only in them form a group whose
#: metrics are averaged (faceattr/sweep/repeat_groups.py): seeds, and the folds of k-fold cross-validation.
REPEAT_KEYS = ("seed", "data.fold")


@dataclass
class Run:
    """What a summary shows about one run."""

    path: Path
    status: Status  # completed, pruned, failed, or incomplete (no run.json or "running": killed, or still running)
    name: str = ""
    error: str | None = None
    log_file: str | None = None
    backbone: str | None = None
    overrides: list[str] = field(default_factory=list)
    monitor: str | None = None
    mode: str = "max"
    best_score: float | None = None
    val_auroc_best: float | None = None
    test: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    wall_time_s: float | None = None
    num_parameters: int | None = None
    best_checkpoint: str | None = None
    # The run's value of each repeat key it has (its override, else its config's), as text: {"seed": "1"}.
    repeats: dict[str, str] = field(default_factory=dict)
    # val/auroc per epoch: [(epoch number starting at 1, value)], from the TensorBoard events.
    curve: list[tuple[int, float]] = field(default_factory=list)
    # The HParams data TensorBoard holds for the run: {name: value}, and the event folders read.
    hparams: dict[str, Any] = field(default_factory=dict)
    event_dirs: list[Path] = field(default_factory=list)

    def score(self, metric: str) -> float | None:
        """The run's best/final value of ``metric`` (the monitored metric: its best value)."""
        if metric == self.monitor and self.best_score is not None:
            return self.best_score
        if metric in (CURVE_TAG, BEST_TAG):
            return self.val_auroc_best
        return self.test.get(metric)


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory at or below ``root``, sorted (job numbers numerically)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (give a run directory or a sweep directory)")
    runs = {p.parent for p in root.rglob(RUN_RECORD) if p.is_file()}
    runs |= {p.parent for p in root.rglob(".hydra") if p.is_dir() and (p / RUN_CONFIG).is_file()}
    for events in root.rglob(EVENTS_GLOB):
        folder = events.parent
        if not any(folder == run or run in folder.parents for run in runs):
            # Events outside every run dir: the folder above a Lightning "version"/"name" level is the run.
            runs.add(folder)
    runs = {run for run in runs if not any(other in run.parents for other in runs)}  # no run inside another
    return sorted(runs, key=natural_key)


def natural_key(path: Path) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except Exception:  # noqa: BLE001 - a broken config file just means less information
        return None


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    if cfg is None:
        return None
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001
        return None


def load_run(path: Path) -> Run:
    """Read one run directory."""
    path = Path(path)
    found = read_run_record(path)
    record = found or RunRecord(Status.COMPLETED)  # without one, what the events and configs say
    hydra_dir = path / ".hydra"
    config = _load_yaml(path / RUN_CONFIG) if (path / RUN_CONFIG).is_file() else None
    if config is None and (hydra_dir / "config.yaml").is_file():
        config = _load_yaml(hydra_dir / "config.yaml")
    overrides = record.overrides if found is not None else None
    if overrides is None and (hydra_dir / "overrides.yaml").is_file():
        loaded = _load_yaml(hydra_dir / "overrides.yaml")
        overrides = [str(o) for o in loaded] if loaded is not None else []

    if found is not None and found.status is Status.RUNNING:
        status, error = Status.INCOMPLETE, f"{RUN_RECORD} says running: the job was killed, or is still running"
    elif found is not None:
        status, error = found.status, found.error or found.reason  # a failure's error line, a pruned run's reason
    elif hydra_dir.is_dir():
        status, error = Status.INCOMPLETE, f"no {RUN_RECORD}: the job was killed, or is still running"
    else:
        status, error = Status.COMPLETED, None  # a plain TensorBoard run: all we know is in its events
    monitor = record.monitor or _select(config, "monitor.metric")
    run = Run(
        path=path,
        status=status,
        error=error,
        log_file=record.log_file,
        backbone=record.backbone or _select(config, "model.backbone"),
        overrides=[str(o) for o in (overrides or [])],
        monitor=monitor,
        mode=str(_select(config, "monitor.mode") or "max"),
        best_score=record.best_score,
        # The monitored metric's best is val/auroc's with the default monitor; otherwise the events say.
        val_auroc_best=record.best_score if monitor == CURVE_TAG else None,
        test={k: v for k, v in record.test.items() if v is not None},
        epochs=record.epochs,
        wall_time_s=record.wall_time_s,
        num_parameters=record.num_parameters,
        best_checkpoint=record.best_checkpoint,
        repeats=_repeats(overrides or [], config),
    )
    _read_events(run)
    if run.monitor is None and run.val_auroc_best is not None:
        run.monitor = CURVE_TAG
    return run


def repeat_override(override: str) -> tuple[str, str] | None:
    """(key, value) of an override of a :data:`REPEAT_KEYS` key (``seed=1``, ``+data.fold=0``), else None."""
    key, sep, value = str(override).partition("=")
    key = key.lstrip("+~")
    return (key, value) if sep and key in REPEAT_KEYS else None


def _repeats(overrides: list[str], config: Any) -> dict[str, str]:
    found = dict(pair for pair in map(repeat_override, overrides) if pair is not None)
    for key in REPEAT_KEYS:
        if key not in found and (value := _select(config, key)) is not None:
            found[key] = str(value)
    return found


def _read_events(run: Run) -> None:
    """Fill the curve, HParams and any metric missing from ``run.json`` from the run's TensorBoard events."""
    folders = sorted({p.parent for p in run.path.rglob(EVENTS_GLOB)}, key=natural_key)
    run.event_dirs = folders
    with _quiet_tensorboard():
        _accumulate(run, folders)


@contextlib.contextmanager
def _quiet_tensorboard():
    """Silence the event reader's INFO lines ("Directory watcher advancing ...") while reading."""
    logger = logging.getLogger("tensorboard")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _accumulate(run: Run, folders: list[Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    points: dict[int, float] = {}  # global step -> val/auroc
    epoch_at: dict[int, float] = {}  # global step -> epoch (the smallest logged at that step: test logs one more)
    last: dict[str, tuple[float, float]] = {}  # tag -> (wall time, value)
    first_wall = last_wall = None
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
        try:
            accumulator.Reload()
        except Exception:  # noqa: BLE001 - a truncated event file: keep what the others hold
            continue
        tags = set(accumulator.Tags().get("scalars", []))
        for tag in tags:
            events = accumulator.Scalars(tag)
            if not events:
                continue
            first_wall = min(first_wall or events[0].wall_time, events[0].wall_time)
            last_wall = max(last_wall or events[-1].wall_time, events[-1].wall_time)
            if tag == CURVE_TAG:
                points.update({e.step: e.value for e in events})
            elif tag == "epoch":
                for e in events:
                    epoch_at[e.step] = min(epoch_at.get(e.step, e.value), e.value)
            newest = max(events, key=lambda e: e.wall_time)
            if tag not in last or newest.wall_time >= last[tag][0]:
                last[tag] = (newest.wall_time, newest.value)
        try:
            hparams_content = accumulator.PluginTagToContent(HPARAMS_PLUGIN)
        except KeyError:  # no HParams record (a job that failed before its end)
            hparams_content = {}
        for tag, content in hparams_content.items():
            if tag == hparams_metadata.SESSION_START_INFO_TAG:
                info = hparams_metadata.parse_session_start_info_plugin_data(content)
                run.hparams.update({name: _hparam_value(value) for name, value in info.hparams.items()})
    run.curve = [
        (int(epoch_at[step]) + 1 if step in epoch_at else index + 1, value)
        for index, (step, value) in enumerate(sorted(points.items()))
        if math.isfinite(value)
    ]
    if run.val_auroc_best is None and BEST_TAG in last:
        run.val_auroc_best = finite_or_none(last[BEST_TAG][1])
    if run.val_auroc_best is None and run.curve:
        run.val_auroc_best = max(v for _, v in run.curve)
    for tag in TEST_TAGS:
        if tag not in run.test and tag in last and finite_or_none(last[tag][1]) is not None:
            run.test[tag] = float(last[tag][1])
    if run.epochs is None and run.curve:
        run.epochs = run.curve[-1][0]
    if run.backbone is None and run.hparams.get("model.backbone") not in (None, "None"):
        run.backbone = str(run.hparams["model.backbone"])
    if run.wall_time_s is None and first_wall is not None and last_wall is not None:
        run.wall_time_s = round(last_wall - first_wall, 1)


def _hparam_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind else None


def _load_or_report(path: Path) -> Run:
    """``load_run``, or a failed row saying why the run could not be read (one bad run must not hide the others)."""
    try:
        return load_run(path)
    except Exception as exc:  # noqa: BLE001
        return Run(path=path, status=Status.FAILED, error=f"could not read this run: {type(exc).__name__}: {exc}")


def load_runs(paths: list[Path]) -> list[Run]:
    """Every run under ``paths`` (each a run or sweep directory), each named relative to their common folder."""
    if not paths:
        raise UserError("give at least one run or sweep directory")
    found: list[Path] = []
    for path in paths:
        dirs = find_run_dirs(Path(path))
        if not dirs:
            raise UserError(
                f"{path}: no runs found (a run directory holds run.json, .hydra/ or TensorBoard event files)"
            )
        found += [d for d in dirs if d not in found]
    runs = [_load_or_report(d) for d in found]
    resolved = [r.path.resolve() for r in runs]
    if len(resolved) == 1:
        runs[0].name = runs[0].path.name
    else:
        import os

        common = Path(os.path.commonpath([str(p) for p in resolved]))
        for run, full in zip(runs, resolved):
            run.name = str(full.relative_to(common)) if full != common else full.name
    return runs
