"""Optional experiment trackers as Lightning loggers: MLflow (``logger=mlflow``) and Weights & Biases
(``logger=wandb``), each an extra of the package (``pip install -e ".[mlflow]"``, ``".[wandb]"``).

Both record, as the run's params, what TensorBoard's HParams tab shows (``faceattr.hparams.flat_hparams`` of the
run's ``config.yaml``: key settings and the sweep's overrides) beside the model's own hyper-parameters that
Lightning logs when fitting starts; the metrics are everything the run logs (val/auroc_best, test/..., per epoch).
Without the package, choosing the logger ends with one line saying how to install it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from faceattr.errors import UserError
from faceattr.hparams import flat_hparams
from faceattr.layout import RUN_CONFIG


def require(package: str, option: str) -> None:
    """Import ``package`` or raise the UserError that says how to install the extra behind ``logger=<option>``."""
    try:
        importlib.import_module(package)
    except ImportError:
        raise UserError(f'logger={option} needs the {package} package: pip install -e ".[{option}]"') from None


def run_name(run_dir: str | Path) -> str:
    """A run's name in a tracker: its directory relative to where it was launched (outputs/<date>/<time>-<id>,
    multirun/<date>/<time>-<id>/<job>), or its absolute path when it lies elsewhere."""
    path = Path(run_dir).resolve()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


class RunParams:
    """Mixin of a Lightning logger: the first ``log_hyperparams`` (when fitting starts) also logs the run's HParams
    (:func:`faceattr.hparams.flat_hparams` of ``<run dir>/config.yaml``, which training writes before fitting)."""

    run_dir: Path
    _run_params_logged = False

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().log_hyperparams(params, *args, **kwargs)
        config = self.run_dir / RUN_CONFIG
        if not self._run_params_logged and config.is_file():
            self._run_params_logged = True
            super().log_hyperparams(flat_hparams(OmegaConf.load(config)))


class MLflowRunLogger(RunParams, MLFlowLogger):
    """Lightning's MLFlowLogger on a local SQLite store shared by all runs (MLflow's file store is deprecated).

    Args:
        store: folder of the store: ``<store>/mlflow.db`` (runs, params, metrics) and ``<store>/artifacts``.
        run_dir: this run's directory (its ``config.yaml``; the MLflow run is named after it and tagged with it).
        experiment_name: the MLflow experiment runs are filed under.
        **kwargs: any other MLFlowLogger argument (``log_model``, ``tags``, ``prefix``, ...).
    """

    def __init__(self, store: str, run_dir: str, experiment_name: str = "faceattr", **kwargs: Any) -> None:
        require("mlflow", "mlflow")
        store_dir = Path(store).resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(run_dir)
        tags = {"run_dir": str(self.run_dir.resolve()), **(kwargs.pop("tags", None) or {})}
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name(run_dir),
            tracking_uri=f"sqlite:///{store_dir / 'mlflow.db'}",
            artifact_location=str(store_dir / "artifacts"),
            tags=tags,
            **kwargs,
        )


class WandbRunLogger(RunParams, WandbLogger):
    """Lightning's WandbLogger, offline unless told otherwise: ``wandb sync <run dir>/wandb/offline-run-*`` uploads
    a run later.

    Args:
        run_dir: this run's directory: its ``config.yaml``, the run's name, and where ``wandb/`` is written.
        project: the W&B project.
        offline: write locally only (no network, no account needed).
        **kwargs: any other WandbLogger / ``wandb.init`` argument (``entity``, ``tags``, ``log_model``, ...).
    """

    def __init__(self, run_dir: str, project: str = "faceattr", offline: bool = True, **kwargs: Any) -> None:
        require("wandb", "wandb")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(name=run_name(run_dir), save_dir=str(self.run_dir), project=project, offline=offline, **kwargs)
