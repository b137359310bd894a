"""A trained run's own data, rebuilt for evaluation and export: the one way they get a run's datamodule.

Eval and export must read the images a run was tested (and validated) on, the way it read them: the same data
source (CelebA's layouts, the generated data or a plain folder's CSV), the same split (a folder's recorded split
included), subsamples, folds and cache. So they start from the run's saved ``config.yaml`` data config, never from
a datamodule built by hand, and let the model's contract fix what the model was trained on: the attributes, the
input size, the crop, the decode rule and the face alignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from faceattr.config_checks import build
from faceattr.contract import ModelContract
from faceattr.errors import UserError
from faceattr.layout import SPLIT_RECORD

#: The datamodule of a checkpoint that has no run config: CelebA's layouts, at the given root.
DEFAULT_TARGET = "faceattr.data.CelebADataModule"


def run_data_config(
    run_config: dict[str, Any] | None,
    contract: ModelContract,
    overrides: dict[str, Any] | None = None,
    root: str | None = None,
    run_dir: Path | None = None,
    root_setting: str = "data.root",
) -> DictConfig:
    """The run's data config with the non-null ``overrides`` (``data.*`` keys) and ``root`` applied, and the
    contract's attributes, size, crop, decode rule and alignment.

    A given root is used as it is (never generated into). A run without a data config (a bare ``.ckpt``) needs a
    root (``root_setting`` names the option that gives it). ``run_dir``: where the run is now; its split record is
    read from there when the recorded path (the run's ``paths.output_dir`` at training time) no longer holds it.
    """
    data = OmegaConf.create((run_config or {}).get("data") or {})
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if root is not None:
        given["root"] = root
    if not data or "_target_" not in data:
        if "root" not in given:
            raise UserError(
                f"the checkpoint has no run config.yaml beside it: pass {root_setting}=<data folder> to read its "
                "data from"
            )
        data = OmegaConf.create({"_target_": DEFAULT_TARGET})
    data.merge_with(given)
    if "root" in given:
        data.synthetic = None
    data.attributes = list(contract.attributes)
    data.image_size = list(contract.image_size)
    data.crop = None if contract.crop is None else list(contract.crop)
    data.jpeg_scaling = contract.jpeg_scaling
    data.align = "detect" if contract.face_alignment == "detect" else "none"
    record = data.get("split_record")
    if record and run_dir is not None and not Path(str(record)).is_file() and (Path(run_dir) / SPLIT_RECORD).is_file():
        data.split_record = str(Path(run_dir) / SPLIT_RECORD)
    return data


def run_datamodule(
    run_config: dict[str, Any] | None,
    contract: ModelContract,
    overrides: dict[str, Any] | None = None,
    root: str | None = None,
    run_dir: Path | None = None,
    root_setting: str = "data.root",
):
    """The run's datamodule (not set up yet) from :func:`run_data_config`."""
    data = run_data_config(run_config, contract, overrides, root, run_dir, root_setting)
    return build(data, "data", _convert_="all")
