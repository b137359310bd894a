"""The check of a composed (or resumed) config against its schema: one :class:`UserError` line per mistake.

Hydra composing onto a schema converts and type-checks what it merges, but a few mistakes get through: a key added
with ``+key=value``, a required ``???`` left unset, a key deleted with ``~key``, a value its field's constraint
refuses (faceattr.constraints), and the knobs of train's free-form groups. A resumed run's saved config.yaml, read
with OmegaConf alone, gets the same check. Public OmegaConf API only: keys are listed from
``OmegaConf.to_container(resolve=False)``, so nothing is resolved just to be listed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, ValidationError

from faceattr.config.schemas import SCHEMAS, Setting, free_groups, settings, valid_keys
from faceattr.constraints import expected, problem_with
from faceattr.errors import UserError

_ABSENT = object()


def shown(value: Any) -> Any:
    """A config value as the user wrote it (plain lists and dicts)."""
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _keys(tree: dict, prefix: str = "") -> list[str]:
    """The dotted keys of the leaves of ``tree`` (a non-empty mapping is not a leaf)."""
    keys = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        keys += _keys(value, full + ".") if isinstance(value, dict) and value else [full]
    return keys


def group_of_settings(name: str, key: str, value: Any) -> UserError | None:
    """The error for ``key=value`` when ``key`` holds several settings (``parity=3``), else None."""
    inside = [k for k in settings(SCHEMAS[name]) if k.startswith(key + ".")]
    if not inside:
        return None
    return UserError(
        f"{key}={value!r}: {key} is a group of settings, set them one by one: {', '.join(k + '=...' for k in inside)}"
    )


def unknown_key(name: str, key: str) -> UserError:
    """The error for a key ``conf/<name>.yaml`` does not have."""
    group = key.split(".", 1)[0]
    if group in free_groups(SCHEMAS[name]) and "." in key:
        return UserError(
            f"unknown {name} option {key!r}: the chosen {group} config has no such key (+{key}=... adds it)"
        )
    return UserError(f"unknown {name} option {key!r}; valid: {valid_keys(name)}")


def _check_type(setting: Setting, value: Any, typed: dict[type, DictConfig]) -> Any:
    """``value`` converted to the setting's type (OmegaConf's structured assignment); ValidationError if it is not
    of that type."""
    if setting.owner not in typed:
        typed[setting.owner] = OmegaConf.structured(setting.owner)
    node = typed[setting.owner]
    node[setting.field.name] = value
    return node[setting.field.name]


def check_config(cfg: DictConfig, name: str, given: dict[str, Any] | None = None) -> None:
    """UserError for the first mistake of the composed ``conf/<name>.yaml`` config ``cfg`` against its schema: an
    unknown or missing key, a value of the wrong type, a value its field's check refuses.

    ``given``: values as the command line gave them (before Hydra converted them), to show in the message.
    """
    given = given or {}
    schema = SCHEMAS[name]
    known = settings(schema)
    free = free_groups(schema)
    tree = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    for key in _keys(tree):
        if key.split(".", 1)[0] in ("hydra", *free) or key in known:
            continue
        raise group_of_settings(name, key, shown(OmegaConf.select(cfg, key))) or unknown_key(name, key)
    typed: dict[type, DictConfig] = {}
    for key, setting in known.items():
        parent = key.rpartition(".")[0]
        parent_node = OmegaConf.select(cfg, parent, default=_ABSENT) if parent else cfg
        last = key.rpartition(".")[2]
        if (
            isinstance(parent_node, DictConfig)
            and last in parent_node.keys()
            and OmegaConf.is_missing(parent_node, last)
        ):
            raise UserError(f"{key} is required: python {name}.py {key}=... ({expected(setting.field)})")
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except InterpolationResolutionError:
            # e.g. ${paths.output_dir} (Hydra's run dir) when the command line is checked before Hydra starts: the
            # check after composing (and the consumer) sees the value.
            continue
        if value is _ABSENT:
            optional = "Optional" in str(setting.field.type) and isinstance(parent_node, DictConfig)
            if key.split(".", 1)[0] not in free and not optional:
                raise UserError(
                    f"{name} option {key} is missing (it has a default in conf/{name}.yaml; do not delete it)"
                )
            continue
        value_shown = given.get(key, shown(value))
        try:
            converted = _check_type(setting, value, typed)
        except ValidationError:
            raise UserError(f"{key}={value_shown!r}: {expected(setting.field)}") from None
        if isinstance(value, str) and isinstance(converted, (bool, int, float)):
            # OmegaConf would read '3' as 3, but the config itself keeps the string its consumers then get.
            raise UserError(f"{key}={value_shown!r}: {expected(setting.field)}")
        problem = problem_with(setting.field, converted)
        if problem:
            raise UserError(f"{key}={value_shown!r}: {problem}")
