"""Checks of ``python export.py``'s config (schema: faceattr.config.export.ExportConfig), named for the export
pipeline: one line for each mistake, before anything slow runs.

* :func:`check_options` checks the composed config: no unknown keys (``+key=value`` adds one silently), and every
  value of the right type and range (``parity.atol=abc`` would otherwise fail deep inside with a traceback).
* :func:`check_command_line` checks export.py's command line as every entry script's is (faceattr.config.command_line).
"""

from __future__ import annotations

from omegaconf import DictConfig

from faceattr.config.check import check_config
from faceattr.config.command_line import check_command_line as check_entry_command_line

CONFIG_NAME = "export"


def check_options(cfg: DictConfig) -> None:
    """UserError for the first unknown key or bad value of a composed export config."""
    check_config(cfg, CONFIG_NAME)


def check_command_line(args: list[str]) -> None:
    """Compose ``conf/export.yaml`` with ``args`` as Hydra would and check the result; one-line UserError if not."""
    check_entry_command_line(CONFIG_NAME, args)
