"""Service settings: ``conf/serve/default.yaml``, then the file ``FACEATTR_SERVE_CONFIG`` picks, then the
``FACEATTR_SERVE_<KEY>`` variables, read onto the typed dataclass ``ServeConfig``.

* ``conf/serve/default.yaml`` holds every setting's value and what it means: the one place a default is written.
  ``ServeConfig`` (below) holds each setting's type and what its value must be (``faceattr.constraints.setting``),
  and no value, as the entry scripts' schemas in faceattr/config/ do; building one without every value is a
  TypeError. Code that runs a served model outside the service (predict.py, benchmarks, tests) starts from the same
  file with :func:`default_serve_config`.
* ``FACEATTR_SERVE_CONFIG`` picks a file: a name in ``conf/serve/`` (``default``, ``onnx``, ``gpu``, ...) or the path
  of a YAML file. Every file starts from ``conf/serve/default.yaml``: its own keys, after those of the files its
  Hydra defaults list names (``defaults: [gpu]``; ``_self_`` may place its keys before them), are applied on top of
  default.yaml's. So a file of one's own lists only what it changes, with or without ``defaults: [default]``;
  gpu.yaml and onnx.yaml list it, and Hydra's compose API composes them alone to the same settings (a test checks
  each file).
* Every key can be overridden by ``FACEATTR_SERVE_<KEY>`` (the key in upper case), e.g.
  ``FACEATTR_SERVE_MODEL=faceattr:abc123`` or ``FACEATTR_SERVE_MAX_BATCH_SIZE=64``; values are read as YAML
  (``null``, ``true``, ``64``, ``[JPEG, PNG]``); lists may also be comma-separated (``JPEG,PNG``).
* Values are converted and type-checked by OmegaConf against ``ServeConfig``, as Hydra does for the entry scripts.
  An unknown key, in a file or in the environment, is an error (a typo would otherwise be silently ignored); every
  mistake is one line (ServeConfigError) naming the key and the file or variable.

The files are composed here (:func:`_read_file`: a defaults list of file names and ``_self_``, the part of Hydra's
defaults list they use), not by Hydra's compose API, because:

* ``predict.py`` runs the served model inside ``@hydra.main``, where Hydra's ``initialize_config_dir`` refuses to
  start ("GlobalHydra is already initialized"); clearing and restoring Hydra's global state around it needs Hydra's
  internals;
* Hydra's errors (a missing file, a bad defaults list) are multi-line and would need parsing into the one line;
* a Bento would ship hydra-core for one file read at start-up (it ships only OmegaConf: bentofile.yaml).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from faceattr.constraints import at_least, one_of, problem_with, setting, type_words
from faceattr.layout import INT8_ARTEFACT
from faceattr.serve.images import ImageLimits, PixelBudget, readable_formats

ENV_PREFIX = "FACEATTR_SERVE_"
ENV_CONFIG = ENV_PREFIX + "CONFIG"
#: The file every settings file starts from (a name in conf/serve/): every setting's default.
BASE = "default"
#: The key of a file's defaults list, and the entry that places the file's own keys in it (Hydra's names).
DEFAULTS = "defaults"
SELF = "_self_"
FORMATS = ("auto", "torchscript", "onnx")
#: The ``precision`` setting: the fp32 artefact, the int8 ONNX one (export.quantize=int8), or int8 where it helps.
PRECISIONS = ("auto", "fp32", "int8")
THRESHOLD_MODES = ("calibrated", "fixed")
RUNNERS = ("inline", "service")
#: Where the model looks in a photo (a request's ``face``): its centre (as CelebA's aligned frame), or the face a
#: detector finds.
FACE_MODES = ("center", "detect")
#: The ``face`` setting that means the model's own mode (its contract's ``default_face_mode``: ``runtime.served_face``).
FACE_AUTO = "auto"
#: The values of the ``face`` setting: the server's default for requests that do not choose.
FACE_SETTINGS = (FACE_AUTO, *FACE_MODES)
#: A photo in which ``face: detect`` finds no face (``no_face``): refused (422), or answered from its centre crop.
NO_FACE_POLICIES = ("reject", "center")
#: The most API workers ``api_workers: null`` starts (one per core up to this).
MAX_AUTO_WORKERS = 4


def _one_of(choices: tuple[str, ...]) -> dict[str, Any]:
    return {"check": one_of(choices), "problem": f"expected one of {', '.join(choices)}"}


AT_LEAST_1 = {"check": at_least(1), "problem": "must be at least 1"}
NULL_OR_AT_LEAST_1 = {"check": at_least(1), "problem": "must be null or at least 1"}


class ServeConfigError(ValueError):
    """A bad service setting; the message names the key and the file or variable it came from."""


@dataclass(frozen=True)
class ServeConfig:
    """The validated settings: each one's type and check; its value and meaning are in ``conf/serve/default.yaml``."""

    model: str
    format: str = setting(**_one_of(FORMATS))
    precision: str = setting(**_one_of(PRECISIONS))
    runner: str = setting(**_one_of(RUNNERS))
    device: str = setting(
        check=lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
        problem="expected auto, cpu, cuda or cuda:N",
    )
    threshold_mode: str = setting(**_one_of(THRESHOLD_MODES))
    threshold: float = setting(check=lambda v: 0.0 <= v <= 1.0, problem="expected a probability in [0, 1]")
    max_batch_size: int = setting(check=at_least(2), problem="BentoML needs at least 2")
    max_latency_ms: int = setting(**AT_LEAST_1)
    max_image_bytes: int = setting(**AT_LEAST_1)
    max_image_pixels: int = setting(**AT_LEAST_1)
    max_decode_pixels: int = setting(**AT_LEAST_1)
    max_request_bytes: int = setting(**AT_LEAST_1)
    max_images_per_request: int = setting(**AT_LEAST_1)
    image_formats: tuple[str, ...]
    # Optional[...], not `int | None`: OmegaConf 2.3 reads only the former as "may be null".
    api_workers: Optional[int] = setting(**NULL_OR_AT_LEAST_1)
    model_workers: int = setting(**AT_LEAST_1)
    num_threads: Optional[int] = setting(**NULL_OR_AT_LEAST_1)
    decode_threads: Optional[int] = setting(**NULL_OR_AT_LEAST_1)
    timeout_s: float = setting(check=lambda v: v > 0, problem="must be positive")
    decimals: int
    access_log: bool
    trace_predictions: bool
    face: str = setting(**_one_of(FACE_SETTINGS))
    no_face: str = setting(**_one_of(NO_FACE_POLICIES))
    face_max_side: int = setting(check=at_least(32), problem="must be at least 32 (pixels)")
    face_min_score: float = setting(check=lambda v: 0.0 < v < 1.0, problem="expected a score in (0, 1)")
    #: Where the settings came from (the file and the variables or changes): not a setting.
    source: str = field(compare=False)

    @property
    def limits(self) -> ImageLimits:
        """The upload limits, without a decoding budget (see :meth:`decoding_limits`)."""
        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.image_formats)

    def decoding_limits(self) -> ImageLimits:
        """The upload limits with a new :class:`PixelBudget` of ``max_decode_pixels``: call once per process."""
        budget = PixelBudget(self.max_decode_pixels, timeout_s=self.timeout_s / 2)
        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.image_formats, budget)

    def for_device(self, device: str, cores: int | None = None) -> ServeConfig:
        """``api_workers`` and ``num_threads`` made concrete for the model running on ``device``.

        With the model inline on a CPU, ``null`` means one API worker per core (at most ``MAX_AUTO_WORKERS``: each
        holds a copy of the model) and the cores shared out between them as model threads: every process then runs
        HTTP, decoding and its model without waiting on another (BENCHMARKS.md, Serving). Otherwise one API worker
        and the library's own thread count. ``decode_threads: null`` is the worker's share of the cores plus one
        (at least 2): more threads decoding at once only contend for the cores and the GIL.
        """
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        inline_cpu = self.runner == "inline" and device == "cpu"
        workers = self.api_workers or (min(cores, MAX_AUTO_WORKERS) if inline_cpu else 1)
        threads = self.num_threads or (max(1, cores // workers) if inline_cpu else None)
        decoders = self.decode_threads or max(2, cores // workers + 1)
        return dataclasses.replace(self, api_workers=workers, num_threads=threads, decode_threads=decoders)

    def describe(self) -> str:
        keys = (
            "model",
            "format",
            "precision",
            "runner",
            "device",
            "api_workers",
            "num_threads",
            "decode_threads",
            "threshold_mode",
            "max_batch_size",
            "max_latency_ms",
            "face",
        )
        return ", ".join(f"{key}={getattr(self, key)}" for key in keys) + f" (from {self.source})"


FIELDS = {f.name: f for f in dataclasses.fields(ServeConfig) if f.name != "source"}


def served_artefact(config: ServeConfig, formats: Mapping[str, str], device: str) -> str:
    """The key (in the model's ``formats``) of the artefact to run, ``config.format`` being decided (onnx or
    torchscript): the int8 ONNX artefact for ``precision: int8``, and for ``auto`` when the model has one and runs
    ONNX on a CPU (where int8 pays: issue 23's int8 / fp32 ratio); else the format's fp32 artefact."""
    if config.precision == "int8" and config.format != "onnx":
        raise ServeConfigError(
            f"precision=int8 runs the model's int8 ONNX artefact, not {config.format}: use format=onnx (or auto on a "
            "CPU), or precision=fp32"
        )
    cpu = device == "cpu"
    int8 = config.precision == "int8" or (config.precision == "auto" and INT8_ARTEFACT in formats and cpu)
    return INT8_ARTEFACT if config.format == "onnx" and int8 else config.format


def bento_root() -> Path | None:
    """The Bento this service runs from (a folder with ``bento.yaml`` and ``src/``), or None when run from source.

    BentoML imports a Bento's service with the working directory at ``<bento>/src``; in a container
    ``BENTO_PATH`` names it. (In a dev environment with faceattr installed editable, the code itself comes from the
    checkout, so its location does not tell.)
    """
    candidates = [Path(__file__).resolve().parents[3], Path.cwd().parent]
    if os.environ.get("BENTO_PATH"):
        candidates.append(Path(os.environ["BENTO_PATH"]))
    for candidate in candidates:
        if (candidate / "bento.yaml").is_file() and (candidate / "src").is_dir():
            return candidate
    return None


def conf_dirs() -> list[Path]:
    """Where ``conf/serve`` may be: the Bento's ``src/conf/serve`` when serving a Bento, then beside the package
    (repo checkout), then the working dir."""
    bento = bento_root()
    dirs = [bento / "src" / "conf" / "serve"] if bento is not None else []
    dirs += [Path(__file__).resolve().parents[2] / "conf" / "serve", Path.cwd() / "conf" / "serve"]
    return list(dict.fromkeys(dirs))


def config_path(name: str, origin: str | None = None) -> Path:
    """The YAML file of ``name``: a path, or a name in ``conf/serve/``. ``origin`` (default
    ``FACEATTR_SERVE_CONFIG=<name>``) says in an error where the name came from."""
    origin = origin or f"{ENV_CONFIG}={name}"
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ServeConfigError(f"{origin}: no such file")
        return candidate
    for folder in conf_dirs():
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    available = sorted({p.stem for folder in conf_dirs() if folder.is_dir() for p in folder.glob("*.yaml")})
    raise ServeConfigError(f"{origin}: no conf/serve/{name}.yaml (available: {', '.join(available) or 'none'})")


def _validate(config: ServeConfig) -> ServeConfig:
    """Each field's own check (see ``setting``), then what depends on the machine or on several fields."""
    where = f"({config.source})"
    for key, spec in FIELDS.items():
        value = getattr(config, key)
        problem = problem_with(spec, value)
        if problem:
            raise ServeConfigError(f"{key}={value!r} {where}: {problem}")
    unreadable = [name for name in config.image_formats if name not in readable_formats()]
    if unreadable:
        raise ServeConfigError(
            f"image_formats {where}: Pillow cannot read {', '.join(unreadable)}; e.g. JPEG, PNG, WEBP, GIF, BMP, TIFF"
        )
    if config.max_decode_pixels < config.max_image_pixels:
        raise ServeConfigError(
            f"max_decode_pixels={config.max_decode_pixels} {where}: must be at least max_image_pixels "
            f"({config.max_image_pixels}), the size of one image: raise it with max_image_pixels"
        )
    if config.max_request_bytes < config.max_image_bytes:
        raise ServeConfigError(
            f"max_request_bytes={config.max_request_bytes} {where}: must be at least max_image_bytes "
            f"({config.max_image_bytes}), or no image of the allowed size could be sent"
        )
    return config


def _schema() -> DictConfig:
    """``ServeConfig`` as a writable OmegaConf structured config (a frozen dataclass gives a read-only one)."""
    node = OmegaConf.structured(ServeConfig)
    OmegaConf.set_readonly(node, False)
    return node


def _set(node: DictConfig, key: str, value: Any, origin: str) -> None:
    """Set setting ``key`` of ``node`` to ``value`` (from ``origin``), converted to the field's type by OmegaConf."""
    where = f"{key}={value!r} ({origin})"
    if key not in FIELDS:
        raise ServeConfigError(f"{origin}: unknown setting {key!r}; valid: {DEFAULTS}, {', '.join(FIELDS)}")
    kind = str(FIELDS[key].type)
    if value is None and "Optional" not in kind:
        raise ServeConfigError(f"{where}: must not be null")
    if kind.startswith("tuple"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ServeConfigError(f"{where}: expected a non-empty list")
        value = [str(item).strip().upper() for item in items if str(item).strip()]
    try:
        node[key] = value
    except ValidationError:
        raise ServeConfigError(f"{where}: {type_words(FIELDS[key])}") from None


def _read_file(path: Path, node: DictConfig, seen: tuple[Path, ...] = ()) -> None:
    """Apply the settings of ``path`` to ``node`` in the order of its defaults list, as Hydra does: the files it
    names (beside it, else in conf/serve/), then ``_self_``, this file's own keys, unless the list places it first."""
    if path.resolve() in seen:
        raise ServeConfigError(f"{path}: its {DEFAULTS} list leads back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ServeConfigError(f"{path}: expected a mapping of settings")
    defaults = raw.pop(DEFAULTS, [])
    if not isinstance(defaults, list) or not all(isinstance(name, str) for name in defaults):
        raise ServeConfigError(f"{path}: {DEFAULTS} must be a list of names of files beside it (and {SELF})")
    if SELF not in defaults:
        defaults = [*defaults, SELF]
    for name in defaults:
        if name == SELF:
            for key, value in raw.items():
                _set(node, key, value, str(path))
            continue
        beside = path.parent / f"{name}.yaml"
        base = beside if beside.is_file() else config_path(name, f"{path}: {DEFAULTS} names {name!r}")
        _read_file(base, node, (*seen, path.resolve()))


def _env_value(key: str, text: str) -> Any:
    """A variable's text as a value: YAML (``null``, ``64``, ``[JPEG, PNG]``), but a string setting keeps the text as
    written (a version such as ``1.10`` that looks like a number)."""
    if str(FIELDS[key].type) == "str":
        return text
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _settings(files: list[Path], changes: list[tuple[str, Any, str]], source: str) -> ServeConfig:
    """The settings of ``files`` in turn (each with its defaults list), then ``changes`` (key, value, origin), checked:
    each field's own check, then what depends on several. Every setting must have a value by then."""
    node = _schema()
    for path in dict.fromkeys(files):
        _read_file(path, node)
    for key, value, origin in changes:
        _set(node, key, value, origin)
    unset = [key for key in FIELDS if OmegaConf.is_missing(node, key)]
    if unset:
        raise ServeConfigError(f"{files[0]}: no value for {', '.join(unset)} (it must set every setting)")
    values = {key: node[key] for key in FIELDS}
    values["image_formats"] = tuple(values["image_formats"])
    return _validate(ServeConfig(**values, source=source))


def load_serve_config(environ: dict[str, str] | None = None) -> ServeConfig:
    """The service's settings: ``conf/serve/default.yaml``, then the file ``FACEATTR_SERVE_CONFIG`` names (default
    ``default``), then the ``FACEATTR_SERVE_<KEY>`` variables of ``environ`` (default ``os.environ``)."""
    environ = dict(os.environ if environ is None else environ)
    path = config_path(environ.get(ENV_CONFIG) or BASE)
    changes = []
    for var, text in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in FIELDS:
            valid = ", ".join(ENV_PREFIX + k.upper() for k in FIELDS)
            raise ServeConfigError(f"unknown environment variable {var}; valid: {ENV_CONFIG}, {valid}")
        changes.append((key, _env_value(key, text), var))
    source = str(path) + (f" + {', '.join(var for _, _, var in changes)}" if changes else "")
    return _settings([config_path(BASE), path], changes, source)


def default_serve_config(**changes: Any) -> ServeConfig:
    """``conf/serve/default.yaml``'s settings with ``changes`` (e.g. ``model="faceattr:abc"``), converted and checked
    as a file's values are: for code that runs a served model outside the service (predict.py, benchmarks, tests),
    which no ``FACEATTR_SERVE_*`` variable or other settings file concerns."""
    path = config_path(BASE)
    origin = "default_serve_config"
    source = str(path) + (f" + {origin}({', '.join(changes)})" if changes else "")
    return _settings([path], [(key, value, origin) for key, value in changes.items()], source)
