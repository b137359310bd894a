"""Typed schemas of the configs users type values into, and the one check that applies them.

The schemas give types and allowed values; the values themselves (defaults) and what they mean are in the YAML files
(every field is ``MISSING`` here).

* ``ExportConfig``, ``EvalConfig`` and ``PredictConfig`` are whole configs: :func:`register_schemas` stores them in
  Hydra's ConfigStore as ``export_schema``, ``eval_schema`` and ``predict_schema``, the first entry of the defaults
  lists of ``conf/export.yaml``, ``conf/eval.yaml`` and ``conf/predict.yaml``, so Hydra composes onto them (types
  converted, a mistyped key refused).
* ``TrainConfig`` holds only the typed knobs of ``conf/train.yaml``: its groups (data, model, trainer, ...) are
  free-form ``_target_`` configs that take any constructor argument, so the composed (or resumed) config is checked
  against it at run time rather than composed onto it.

:func:`check_config` checks a composed config against a schema: unknown and missing keys (closed schemas), types
(OmegaConf's structured merge) and each field's constraint (faceattr.constraints), one :class:`UserError` line per
mistake. :func:`check_command_line` composes a config with the command line before ``@hydra.main`` does and turns
Hydra's multi-line composition errors into the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ValidationError

from faceattr.constraints import at_least, between, one_of, problem_text, problem_with, setting
from faceattr.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
#: The folder of an entry script's config when it is not ``conf/`` itself: predict's settings include ``model``,
#: which Hydra would take for the training config group ``conf/model/`` if ``conf/`` were its search path.
CONFIG_DIRS: dict[str, Path] = {"predict": CONFIG_DIR / "predict"}


# --- train.py: the typed knobs of the free-form groups --------------------------------------------------------------


@dataclass
class MonitorConfig:
    metric: str = MISSING
    mode: str = setting(MISSING, check=one_of(("min", "max")), problem="expected min or max")


@dataclass
class DataKnobs:
    batch_size: Optional[int] = MISSING
    eval_batch_size: Optional[int] = MISSING
    num_workers: Optional[int] = MISSING
    limit: Optional[int] = MISSING
    val_limit: Optional[int] = MISSING
    seed: Optional[int] = MISSING
    skip_corrupt: Optional[bool] = MISSING
    # A folder for the pre-decoded image cache (faceattr/data/cache.py), or null.
    cache: Optional[str] = MISSING
    # Decode JPEGs at a reduced DCT scale (faceattr/jpeg_scaling.py).
    jpeg_scaling: Optional[bool] = MISSING


@dataclass
class TrainerKnobs:
    max_epochs: Optional[int] = MISSING
    min_epochs: Optional[int] = MISSING
    check_val_every_n_epoch: Optional[int] = MISSING
    log_every_n_steps: Optional[int] = MISSING


@dataclass
class OptimizerKnobs:
    lr: Optional[float] = MISSING
    weight_decay: Optional[float] = MISSING
    momentum: Optional[float] = MISSING


@dataclass
class ModelKnobs:
    drop_rate: Optional[float] = MISSING


@dataclass
class TrainConfig:
    seed: Optional[int] = MISSING
    ckpt_path: Optional[str] = MISSING
    resume: Optional[str] = MISSING
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    test: bool = MISSING
    data: DataKnobs = field(default_factory=DataKnobs)
    trainer: TrainerKnobs = field(default_factory=TrainerKnobs)
    optimizer: OptimizerKnobs = field(default_factory=OptimizerKnobs)
    model: ModelKnobs = field(default_factory=ModelKnobs)


# --- export.py ------------------------------------------------------------------------------------------------------


@dataclass
class ParityConfig:
    num_images: int = setting(
        MISSING, check=at_least(1), problem="expected an integer >= 1 (the parity check needs at least one image)"
    )
    atol: float = setting(MISSING, check=at_least(0), problem="expected a number >= 0")


@dataclass
class CalibrationConfig:
    max_images: Optional[int] = setting(MISSING, check=at_least(0), problem="expected null or an integer >= 0")
    default_threshold: float = setting(MISSING, check=between(0, 1), problem="expected a number in [0, 1]")
    batch_size: int = setting(MISSING, check=at_least(1), problem="expected an integer >= 1")
    num_workers: int = setting(MISSING, check=at_least(0), problem="expected an integer >= 0")


@dataclass
class ExportFormatConfig:
    formats: list[str] = setting(MISSING, problem="expected a list, e.g. [onnx]")
    opset: Optional[int] = setting(MISSING, check=at_least(7), problem="expected null or an ONNX opset >= 7")


@dataclass
class ExportConfig:
    ckpt: str = setting(MISSING, check=lambda v: v.strip() != "", problem="expected a .ckpt file, run dir or sweep dir")
    name: str = setting(MISSING, check=lambda v: v != "", problem="expected a BentoML model name")
    store: bool = MISSING
    output_dir: Optional[str] = setting(MISSING, problem="expected a path or null")
    data_root: Optional[str] = setting(MISSING, problem="expected a path or null")
    test_metrics: bool = MISSING
    parity: ParityConfig = field(default_factory=ParityConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    export: ExportFormatConfig = field(default_factory=ExportFormatConfig)


# --- eval.py --------------------------------------------------------------------------------------------------------


def _threshold_or_calibrated(value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() == "calibrated":
            return True
        try:
            value = float(value)
        except ValueError:
            return False
    return between(0, 1)(value)


@dataclass
class EvalDataConfig:
    root: Optional[str] = setting(MISSING, problem="expected a path or null")
    num_workers: Optional[int] = setting(MISSING, check=at_least(0), problem="expected null or an integer >= 0")
    eval_batch_size: Optional[int] = setting(MISSING, check=at_least(1), problem="expected null or an integer >= 1")


@dataclass
class EvalConfig:
    ckpt: str = setting(MISSING, check=lambda v: v.strip() != "", problem="expected a .ckpt file, run dir or sweep dir")
    split: str = setting(MISSING, check=one_of(("test", "valid")), problem="expected one of test, valid")
    # A number or the word calibrated: OmegaConf has no union of float and str, so the check says which.
    thresholds: Any = setting(
        MISSING, check=_threshold_or_calibrated, problem="expected a number in [0, 1] (e.g. 0.5) or calibrated"
    )
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    output_dir: Optional[str] = setting(MISSING, problem="expected a path or null")
    tensorboard: bool = MISSING


# --- predict.py -----------------------------------------------------------------------------------------------------


def _not_blank(value: Any) -> bool:
    return str(value).strip() != ""


@dataclass
class PredictConfig:
    model: str = setting(
        MISSING, check=_not_blank, problem="expected a model tag, an export folder, a run dir or .ckpt"
    )
    images: str = setting(MISSING, check=_not_blank, problem="expected a folder of photos or a glob pattern")
    out: str = setting(MISSING, check=_not_blank, problem="expected a CSV file path")
    face: str = setting(MISSING, check=one_of(("center", "detect")), problem="expected center or detect")
    all_faces: bool = MISSING
    no_face: str = setting(MISSING, check=one_of(("skip", "center")), problem="expected skip or center")
    face_max_side: int = setting(MISSING, check=at_least(32), problem="expected an integer >= 32 (pixels)")
    face_min_score: float = setting(MISSING, check=lambda v: 0 < v < 1, problem="expected a score in (0, 1)")
    batch_size: int = setting(MISSING, check=at_least(1), problem="expected an integer >= 1")
    threads: Optional[int] = setting(MISSING, check=at_least(1), problem="expected null or an integer >= 1")
    num_threads: Optional[int] = setting(MISSING, check=at_least(1), problem="expected null or an integer >= 1")
    format: str = setting(
        MISSING, check=one_of(("auto", "torchscript", "onnx")), problem="expected auto, torchscript or onnx"
    )
    device: str = setting(
        MISSING,
        check=lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
        problem="expected auto, cpu, cuda or cuda:N",
    )


#: The schema of each entry script's config (``conf/<name>.yaml``).
SCHEMAS: dict[str, type] = {"train": TrainConfig, "export": ExportConfig, "eval": EvalConfig, "predict": PredictConfig}
#: Schemas Hydra composes onto (the others are checked after composing, see the module doc).
CLOSED = ("export", "eval", "predict")
#: The config groups of each closed config (folders of conf/).
GROUPS: dict[str, tuple[str, ...]] = {"export": ("export",), "eval": (), "predict": ()}


def register_schemas() -> None:
    """Store the closed schemas in Hydra's ConfigStore as ``<name>_schema`` (idempotent: storing again replaces)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in CLOSED:
        store.store(name=f"{name}_schema", node=SCHEMAS[name])


# --- checking -------------------------------------------------------------------------------------------------------


def _leaves(schema: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every setting of ``schema`` by dotted key (nested dataclasses flattened)."""
    leaves: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(schema):
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            leaves.update(_leaves(type(nested), f"{prefix}{f.name}."))
        else:
            leaves[f"{prefix}{f.name}"] = f
    return leaves


def _expected(f: dataclasses.Field) -> str:
    """What a field's value must be, in words: its ``problem`` text, else from its type."""
    text = problem_text(f)
    if text:
        return text
    kind = str(f.type)
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    for name, word in words.items():
        if re.search(rf"\b{name}\b", kind):
            return f"expected {word}"
    return "expected a valid value"


def _shown(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


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


def valid_keys(name: str) -> str:
    """``ckpt, name, ...; groups: export=onnx|torchscript``: the settings of ``conf/<name>.yaml``."""
    text = ", ".join(_leaves(SCHEMAS[name]))
    groups = GROUPS.get(name, ())
    if groups:
        text += "; groups: " + ", ".join(f"{g}={'|'.join(group_options(g))}" for g in groups)
    return text


def group_options(group: str) -> list[str]:
    """The options of a config group: the files of ``conf/<group>/``."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _group_of_settings(name: str, key: str, value: Any) -> UserError | None:
    inside = [k for k in _leaves(SCHEMAS[name]) if k.startswith(key + ".")]
    if not inside:
        return None
    return UserError(
        f"{key}={value!r}: {key} is a group of settings, set them one by one: {', '.join(k + '=...' for k in inside)}"
    )


def _is_missing(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) is ``???`` in ``cfg``."""
    parent, _, last = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and last in node.keys() and OmegaConf.is_missing(node, last)


def check_config(cfg: DictConfig, name: str, given: dict[str, Any] | None = None) -> None:
    """UserError for the first mistake of the composed ``conf/<name>.yaml`` config ``cfg`` against its schema: an
    unknown or missing key (closed schemas), a value of the wrong type, a value its field's check refuses.

    ``given``: values as the command line gave them (before Hydra converted them), to show in the message.
    """
    given = given or {}
    schema = SCHEMAS[name]
    leaves = _leaves(schema)
    closed = name in CLOSED
    if closed:
        for key in _flat_keys(cfg):
            if key == "hydra" or key.startswith("hydra.") or key in leaves:
                continue
            raise _group_of_settings(name, key, _shown(OmegaConf.select(cfg, key))) or UserError(
                f"unknown {name} option {key!r}; valid: {valid_keys(name)}"
            )
    typed = OmegaConf.structured(schema)
    for key, f in leaves.items():
        if _is_missing(cfg, key):
            raise UserError(f"{key} is required: python {name}.py {key}=... ({_expected(f)})")
        value = OmegaConf.select(cfg, key, default="<absent>")
        if isinstance(value, str) and value == "<absent>":
            parent = key.rpartition(".")[0]
            optional = "Optional" in str(f.type) and (not parent or OmegaConf.select(cfg, parent) is not None)
            if closed and not optional:
                raise UserError(
                    f"{name} option {key} is missing (it has a default in conf/{name}.yaml; do not delete it)"
                )
            continue
        shown = given.get(key, _shown(value))
        try:
            OmegaConf.update(typed, key, value, merge=False)
        except ValidationError:
            raise UserError(f"{key}={shown!r}: {_expected(f)}") from None
        converted = OmegaConf.select(typed, key)
        if isinstance(value, str) and isinstance(converted, (bool, int, float)):
            # OmegaConf would read '3' as 3, but the config itself keeps the string its consumers then get.
            raise UserError(f"{key}={shown!r}: {_expected(f)}")
        problem = problem_with(f, converted)
        if problem:
            raise UserError(f"{key}={shown!r}: {problem}")


# --- the command line, before @hydra.main composes ------------------------------------------------------------------


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
            lines = [
                line.strip()
                for line in str(error).splitlines()
                if line.strip() and not line.startswith(("Error parsing override", "See https"))
            ]
            reason = lines[0] if lines else ""
            return (
                f"cannot parse the argument {arg!r} ({reason or 'bad syntax'}): arguments are key=value "
                "overrides, e.g. ckpt=outputs/<date>/<time>-<id>"
            )
    return f"cannot parse the command line: {_first_line(exc)}"


def _given_values(args: list[str]) -> dict[str, Any]:
    """The values ``args`` give, by key, as Hydra parses them (before converting them to the schema's types)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(args) if not o.is_delete()}


def _bad_value(name: str, args: list[str], error: ValidationError) -> UserError:
    key = str(error.full_key)
    value = _given_values(args).get(key)
    leaves = _leaves(SCHEMAS[name])
    if key in leaves:
        return UserError(f"{key}={_shown(value)!r}: {_expected(leaves[key])}")
    return _group_of_settings(name, key, value) or UserError(f"{key}={value!r}: {_first_line(error)}")


def check_command_line(name: str, args: list[str]) -> None:
    """Compose ``conf/<name>.yaml`` with ``args`` as Hydra will and check the result (:func:`check_config`); a
    one-line UserError for an override that does not parse, an unknown key or group option, or a bad value.

    Arguments that start with ``-`` (``--cfg job``, ``--help``, ``-m``, ...) are Hydra's own: then nothing is
    checked here and Hydra handles the command line.
    """
    if any(arg.startswith("-") for arg in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    register_schemas()
    try:
        given = _given_values(args)
        for key, value in given.items():
            # ``data=3`` in eval: Hydra would take data for a group of conf/ and fail with a ValueError.
            if key not in GROUPS.get(name, ()) and not isinstance(value, dict):
                error = _group_of_settings(name, key, value)
                if error is not None:
                    raise error
        with initialize_config_dir(config_dir=str(CONFIG_DIRS.get(name, CONFIG_DIR)), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(args))
    except OverrideParseException as exc:
        raise UserError(_parse_error(args, exc)) from None
    except MissingConfigException as exc:
        text = _first_line(exc)
        found = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
        if found:
            group, option = found.groups()
            raise UserError(
                f"{group}={option}: no such option (available: {', '.join(group_options(group))})"
            ) from None
        raise UserError(text) from None
    except ConfigCompositionException as exc:
        text = _first_line(exc)
        if text.startswith("Could not override '"):
            key = text.split("'", 2)[1]
            raise UserError(f"unknown {name} option {key!r}; valid: {valid_keys(name)}") from None
        if isinstance(exc.__cause__, ValidationError):
            raise _bad_value(name, args, exc.__cause__) from None
        raise UserError(f"{text} ({_first_line(exc.__cause__)})" if exc.__cause__ else text) from None
    check_config(cfg, name, given)
