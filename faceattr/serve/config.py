"""Service settings: ``conf/serve/<name>.yaml``, then ``FACEATTR_SERVE_<KEY>`` environment variables on top.

* ``FACEATTR_SERVE_CONFIG`` picks the file: a name in ``conf/serve/`` (``default``, ``onnx``, ``gpu``, ...) or the
  path of a YAML file.
* Every key of that file can be overridden by ``FACEATTR_SERVE_<KEY>`` (the key in upper case), e.g.
  ``FACEATTR_SERVE_MODEL=faceattr:abc123`` or ``FACEATTR_SERVE_MAX_BATCH_SIZE=64``; values are read as YAML
  (``null``, ``true``, ``64``, ``[JPEG, PNG]``); lists may also be comma-separated (``JPEG,PNG``).
* An unknown key, in the file or in the environment, is an error (a typo would otherwise be silently ignored).
* What each value must be is declared on its ``ServeConfig`` field (``faceattr.constraints.setting``), as the
  training, export and eval schemas declare theirs (faceattr/config_schema.py).

No Hydra here: the service must start from a built Bento, which carries ``conf/serve/`` but not the training
configs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faceattr.constraints import at_least, one_of, problem_with, setting
from faceattr.serve.images import DEFAULT_FORMATS, ImageLimits, PixelBudget, readable_formats

ENV_PREFIX = "FACEATTR_SERVE_"
ENV_CONFIG = ENV_PREFIX + "CONFIG"
FORMATS = ("auto", "torchscript", "onnx")
THRESHOLD_MODES = ("calibrated", "fixed")
RUNNERS = ("inline", "service")
#: Where the model looks in a photo (``face``): its centre (as CelebA's aligned frame), or the face a detector finds.
FACE_MODES = ("center", "detect")
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
    """The validated settings (see ``conf/serve/default.yaml`` for what each one means)."""

    model: str = "faceattr"
    format: str = setting("auto", **_one_of(FORMATS))
    runner: str = setting("inline", **_one_of(RUNNERS))
    device: str = setting(
        "auto",
        check=lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
        problem="expected auto, cpu, cuda or cuda:N",
    )
    threshold_mode: str = setting("calibrated", **_one_of(THRESHOLD_MODES))
    threshold: float = setting(0.5, check=lambda v: 0.0 <= v <= 1.0, problem="expected a probability in [0, 1]")
    max_batch_size: int = setting(32, check=at_least(2), problem="BentoML needs at least 2")
    max_latency_ms: int = setting(5000, **AT_LEAST_1)
    max_image_bytes: int = setting(10 * 1024 * 1024, **AT_LEAST_1)
    max_image_pixels: int = setting(50_000_000, **AT_LEAST_1)
    max_decode_pixels: int = setting(50_000_000, **AT_LEAST_1)
    max_request_bytes: int = setting(32 * 1024 * 1024, **AT_LEAST_1)
    max_images_per_request: int = setting(16, **AT_LEAST_1)
    image_formats: tuple[str, ...] = DEFAULT_FORMATS
    num_threads: int | None = setting(None, **NULL_OR_AT_LEAST_1)
    decode_threads: int | None = setting(None, **NULL_OR_AT_LEAST_1)
    api_workers: int | None = setting(None, **NULL_OR_AT_LEAST_1)
    model_workers: int = setting(1, **AT_LEAST_1)
    timeout_s: float = setting(60.0, check=lambda v: v > 0, problem="must be positive")
    decimals: int = 6
    access_log: bool = False
    face: str = setting("center", **_one_of(FACE_MODES))
    no_face: str = setting("reject", **_one_of(NO_FACE_POLICIES))
    face_max_side: int = setting(320, check=at_least(32), problem="must be at least 32 (pixels)")
    face_min_score: float = setting(0.5, check=lambda v: 0.0 < v < 1.0, problem="expected a score in (0, 1)")
    source: str = field(default="defaults", compare=False)

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


def config_path(name: str) -> Path:
    """The YAML file of ``name``: a path, or a name in ``conf/serve/``."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ServeConfigError(f"{ENV_CONFIG}={name}: no such file")
        return candidate
    for folder in conf_dirs():
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    available = sorted({p.stem for folder in conf_dirs() if folder.is_dir() for p in folder.glob("*.yaml")})
    raise ServeConfigError(
        f"{ENV_CONFIG}={name}: no conf/serve/{name}.yaml (available: {', '.join(available) or 'none'})"
    )


def _coerce(key: str, value: Any, origin: str) -> Any:
    """Check and convert one value to the type of field ``key``."""
    kind = FIELDS[key].type
    where = f"{key}={value!r} ({origin})"
    if value is None:
        if "None" in kind:
            return None
        raise ServeConfigError(f"{where}: must not be null")
    if kind.startswith("tuple"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ServeConfigError(f"{where}: expected a non-empty list")
        return tuple(str(item).strip().upper() for item in items if str(item).strip())
    if kind == "bool":
        if not isinstance(value, bool):
            raise ServeConfigError(f"{where}: expected true or false")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ServeConfigError(f"{where}: expected an integer")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ServeConfigError(f"{where}: expected a number")
        return float(value)
    return str(value)


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


def _read_file(path: Path, values: dict[str, Any], seen: tuple[Path, ...] = ()) -> None:
    """Apply the settings of ``path`` to ``values``, after those of the file it ``extends`` (if any)."""
    if path.resolve() in seen:
        raise ServeConfigError(f"{path}: 'extends' loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ServeConfigError(f"{path}: expected a mapping of settings")
    base = raw.pop("extends", None)
    if base is not None:
        _read_file(config_path(str(base)), values, (*seen, path.resolve()))
    for key, value in raw.items():
        if key not in FIELDS:
            raise ServeConfigError(f"{path}: unknown setting {key!r}; valid: extends, {', '.join(FIELDS)}")
        values[key] = _coerce(key, value, str(path))


def load_serve_config(environ: dict[str, str] | None = None) -> ServeConfig:
    """Read the YAML file chosen by ``FACEATTR_SERVE_CONFIG`` (default ``default``) and apply env overrides.

    A file may start from another one with ``extends: <name>``.
    """
    environ = dict(os.environ if environ is None else environ)
    name = environ.get(ENV_CONFIG, "default") or "default"
    path = config_path(name)
    values: dict[str, Any] = {}
    _read_file(path, values)
    overridden = []
    for var, text in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in FIELDS:
            valid = ", ".join(ENV_PREFIX + k.upper() for k in FIELDS)
            raise ServeConfigError(f"unknown environment variable {var}; valid: {ENV_CONFIG}, {valid}")
        try:
            parsed = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            parsed = text
        if FIELDS[key].type == "str" and parsed is not None:
            parsed = text  # keep e.g. a version that looks like a number as written
        values[key] = _coerce(key, parsed, var)
        overridden.append(var)
    source = str(path) + (f" + {', '.join(overridden)}" if overridden else "")
    return _validate(ServeConfig(**values, source=source))
