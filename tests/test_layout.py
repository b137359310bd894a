"""The run layout is named once (faceattr/layout.py): the YAML configs that spell the same folders agree with it."""

from __future__ import annotations

from conftest import REPO
from omegaconf import OmegaConf

from faceattr import layout


def test_configs_spell_the_run_layout_as_layout_py_does():
    callbacks = OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml")
    logger = OmegaConf.load(REPO / "conf" / "logger" / "tensorboard.yaml")
    assert callbacks.model_checkpoint._get_node("dirpath")._value() == f"${{paths.output_dir}}/{layout.CHECKPOINT_DIR}"
    assert logger.tensorboard._get_node("save_dir")._value() == f"${{paths.output_dir}}/{layout.TENSORBOARD_DIR}"
    # Lightning names the last checkpoint itself; ModelCheckpoint's default must still be ours.
    from lightning.pytorch.callbacks import ModelCheckpoint

    assert f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}" == layout.LAST_CHECKPOINT
