"""Checks of ``python export.py``'s command line and config: one line for each mistake, before anything slow runs.

* :func:`check_command_line` composes the export config with the command-line overrides the way Hydra will, and
  turns Hydra's multi-line composition errors (an unknown key, an unknown ``export=`` option, an override that does
  not parse) into one :class:`~faceattr.errors.UserError` line naming the valid options.
* :func:`check_options` checks the composed config: no unknown keys (``+key=value`` adds one silently), and every
  value of the right type and range (``parity.atol=abc`` would otherwise fail deep inside with a traceback).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from faceattr.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
CONFIG_NAME = "export"
GROUP = "export"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(float(value))


def _optional_str(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "expected a path or null"


def _check(predicate: Callable[[Any], bool], expected: str) -> Callable[[Any], str | None]:
    return lambda value: None if predicate(value) else expected


#: Every export key (dotted) and what its value must be. ``export.formats`` is checked by the pipeline itself.
OPTIONS: dict[str, Callable[[Any], str | None]] = {
    "ckpt": _check(lambda v: isinstance(v, str) and v.strip() != "", "expected a .ckpt file, run dir or sweep dir"),
    "name": _check(lambda v: isinstance(v, str) and v != "", "expected a BentoML model name"),
    "store": _check(lambda v: isinstance(v, bool), "expected true or false"),
    "output_dir": _optional_str,
    "data_root": _optional_str,
    "test_metrics": _check(lambda v: isinstance(v, bool), "expected true or false"),
    "parity.num_images": _check(lambda v: _is_int(v) and v >= 1,
                                "expected an integer >= 1 (the parity check needs at least one image)"),
    "parity.atol": _check(lambda v: _is_number(v) and v >= 0, "expected a number >= 0"),
    "calibration.max_images": _check(lambda v: v is None or (_is_int(v) and v >= 0),
                                     "expected null or an integer >= 0"),
    "calibration.default_threshold": _check(lambda v: _is_number(v) and 0 <= v <= 1, "expected a number in [0, 1]"),
    "calibration.batch_size": _check(lambda v: _is_int(v) and v >= 1, "expected an integer >= 1"),
    "calibration.num_workers": _check(lambda v: _is_int(v) and v >= 0, "expected an integer >= 0"),
    "export.formats": _check(lambda v: isinstance(v, (list, tuple, ListConfig)), "expected a list, e.g. [onnx]"),
    "export.opset": _check(lambda v: v is None or (_is_int(v) and v >= 7), "expected null or an ONNX opset >= 7"),
}


def group_options() -> list[str]:
    """The ``export=`` options: the files of ``conf/export/``."""
    return sorted(p.stem for p in (CONFIG_DIR / GROUP).glob("*.yaml"))


def valid_keys() -> str:
    return ", ".join(OPTIONS) + f"; groups: export={'|'.join(group_options())}"


def _flat_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        node = cfg._get_node(key)  # noqa: SLF001 - no public way to look at a node without resolving it
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():  # noqa: SLF001
            nested = _flat_keys(node, full + ".")
            keys += nested if nested else [full]
        else:
            keys.append(full)
    return keys


def check_options(cfg: DictConfig) -> None:
    """UserError for the first unknown key or bad value of a composed export config."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise UserError("ckpt is required: python export.py ckpt=<.ckpt file | run dir | sweep dir>")
    keys = [k for k in _flat_keys(cfg) if k != "hydra" and not k.startswith("hydra.")]
    unknown = [k for k in keys if k not in OPTIONS]
    if unknown:
        key = unknown[0]
        inside = [k for k in OPTIONS if k.startswith(key + ".")]
        if inside:
            raise UserError(f"{key}={OmegaConf.select(cfg, key)!r}: {key} is a group of settings, set them one by "
                            f"one: {', '.join(k + '=...' for k in inside)}")
        raise UserError(f"unknown export option {key!r}; valid: {valid_keys()}")
    for key, check in OPTIONS.items():
        value = OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False)
        if isinstance(value, str) and value == "<absent>":
            if key in ("export.opset", "output_dir", "data_root"):
                continue  # optional: absent means null
            raise UserError(f"export option {key} is missing (it has a default in conf/export.yaml; do not delete it)")
        problem = check(value)
        if problem:
            shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
            raise UserError(f"{key}={shown!r}: {problem}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _parse_error(args: list[str], exc: Exception) -> str:
    """One line for an override Hydra's grammar rejects: which argument, and why."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_overrides([arg])
        except Exception as error:  # noqa: BLE001 - the grammar's errors
            lines = [line.strip() for line in str(error).splitlines()
                     if line.strip() and not line.startswith(("Error parsing override", "See https"))]
            reason = lines[0] if lines else ""
            return (f"cannot parse the argument {arg!r} ({reason or 'bad syntax'}): arguments are key=value "
                    "overrides, e.g. ckpt=outputs/<date>/<time> parity.atol=1e-3")
    return f"cannot parse the command line: {_first_line(exc)}"


def check_command_line(args: list[str]) -> None:
    """Compose ``conf/export.yaml`` with ``args`` as Hydra would and check the result; one-line UserError if not.

    Arguments that start with ``-`` (``--cfg job``, ``--help``, ``-m``, ...) are Hydra's own: then nothing is
    checked here and Hydra handles the command line.
    """
    if any(arg.startswith("-") for arg in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=list(args))
    except OverrideParseException as exc:
        raise UserError(_parse_error(args, exc)) from None
    except MissingConfigException as exc:
        text = _first_line(exc)
        if f"'{GROUP}/" in text:
            option = text.split(f"'{GROUP}/", 1)[1].split("'", 1)[0]
            raise UserError(f"export={option}: no such option (available: {', '.join(group_options())})") from None
        raise UserError(text) from None
    except ConfigCompositionException as exc:
        text = _first_line(exc)
        if text.startswith("Could not override '"):
            key = text.split("'", 2)[1]
            raise UserError(f"unknown export option {key!r}; valid: {valid_keys()}") from None
        raise UserError(f"{text} ({_first_line(exc.__cause__)})" if exc.__cause__ else text) from None
    check_options(cfg)
