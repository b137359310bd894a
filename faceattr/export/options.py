"""Checks of ``python export.py``'s command line and config (schema: faceattr.config_schema.ExportConfig): one line
for each mistake, before anything slow runs.

* :func:`check_command_line` composes the export config with the command-line overrides the way Hydra will, and
  turns Hydra's multi-line composition errors (an unknown key, an unknown ``export=`` option, an override that does
  not parse, a value of the wrong type) into one :class:`~faceattr.errors.UserError` line.
* :func:`check_options` checks the composed config: no unknown keys (``+key=value`` adds one silently), and every
  value of the right type and range (``parity.atol=abc`` would otherwise fail deep inside with a traceback).
"""

from __future__ import annotations

from omegaconf import DictConfig

from faceattr import config_schema

CONFIG_NAME = "export"


def check_options(cfg: DictConfig) -> None:
    """UserError for the first unknown key or bad value of a composed export config."""
    config_schema.check_config(cfg, CONFIG_NAME)


def check_command_line(args: list[str]) -> None:
    """Compose ``conf/export.yaml`` with ``args`` as Hydra would and check the result; one-line UserError if not."""
    config_schema.check_command_line(CONFIG_NAME, args)
