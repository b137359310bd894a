"""Which schema each entry script's config composes onto, where its YAML lives, and each schema's settings by key.

:func:`register_schemas` stores every schema in Hydra's ConfigStore as ``<name>_schema``, the first entry of the
defaults list of ``conf/<name>.yaml``: call it before Hydra composes (the entry scripts do on import).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from faceattr.config.eval import EvalConfig
from faceattr.config.export import ExportConfig
from faceattr.config.predict import PredictConfig
from faceattr.config.train import FREE_FORM, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
#: The folder of an entry script's config when it is not ``conf/`` itself: predict's settings include ``model``,
#: which Hydra would take for the training config group ``conf/model/`` if ``conf/`` were its search path.
CONFIG_DIRS: dict[str, Path] = {"predict": CONFIG_DIR / "predict"}

#: The schema of each entry script's config (``conf/<name>.yaml``).
SCHEMAS: dict[str, type] = {"train": TrainConfig, "export": ExportConfig, "eval": EvalConfig, "predict": PredictConfig}
#: The config groups of each config (folders of conf/ its command line picks options of).
GROUPS: dict[str, tuple[str, ...]] = {
    "train": (
        "data",
        "model",
        "optimizer",
        "scheduler",
        "callbacks",
        "trainer",
        "logger",
        "experiment",
        "hparams_search",
        "debug",
    ),
    "export": ("export",),
    "eval": (),
    "predict": (),
}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as ``<name>_schema`` (idempotent: storing again replaces)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=f"{name}_schema", node=schema)


@dataclass(frozen=True)
class Setting:
    """One typed setting: the dataclass that declares it (to type-check a value against) and its field."""

    owner: type
    field: dataclasses.Field


def settings(schema: type, prefix: str = "") -> dict[str, Setting]:
    """Every typed setting of ``schema`` by dotted key: nested dataclasses flattened, and the knobs of its free-form
    groups (``data.batch_size``: faceattr.config.train.free_form) under the group's key."""
    found: dict[str, Setting] = {}
    for f in dataclasses.fields(schema):
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            found.update(settings(type(nested), f"{prefix}{f.name}."))
        elif FREE_FORM in f.metadata:
            if f.metadata[FREE_FORM] is not None:
                found.update(settings(f.metadata[FREE_FORM], f"{prefix}{f.name}."))
        else:
            found[f"{prefix}{f.name}"] = Setting(schema, f)
    return found


def free_groups(schema: type) -> list[str]:
    """The keys of ``schema``'s free-form groups: any key below them is the group option's own business."""
    return [f.name for f in dataclasses.fields(schema) if FREE_FORM in f.metadata]


def group_options(group: str) -> list[str]:
    """The options of a config group: the files of ``conf/<group>/``."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def valid_keys(name: str) -> str:
    """``ckpt, name, ...; groups: export=onnx|torchscript``: the settings of ``conf/<name>.yaml``."""
    schema = SCHEMAS[name]
    free = free_groups(schema)
    keys = [key for key in settings(schema) if key.split(".", 1)[0] not in free]
    text = ", ".join(keys + [f"{group}.*" for group in free])
    groups = GROUPS[name]
    if groups:
        text += "; groups: " + ", ".join(f"{g}={'|'.join(group_options(g))}" for g in groups)
    return text
