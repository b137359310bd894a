"""An entry script's command line, checked before ``@hydra.main`` runs: every mistake in one line.

``@hydra.main`` reports a bad override with several lines of Hydra's own and exit status 1, and from inside the
decorated function nothing can be done about it: the composition fails before it is called. So every entry script
(train.py, eval.py, export.py, predict.py alike) first calls :func:`check_or_exit`, which composes the config with
the command line through Hydra's compose API as ``@hydra.main`` then will, reads what went wrong from the structured
exceptions (the override Hydra's grammar rejects and why, the missing group option and the available ones, the key
and value OmegaConf refused) and checks the result against the schema (faceattr.config.check). Composing costs a
fraction of a second; nothing slow has run yet.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from faceattr.config.check import check_config, group_of_settings, shown, unknown_key
from faceattr.config.schemas import CONFIG_DIR, CONFIG_DIRS, GROUPS, SCHEMAS, group_options, register_schemas, settings
from faceattr.constraints import expected
from faceattr.errors import UserError, exit_on_user_error

#: A valid override of each entry script, shown when an argument does not parse.
EXAMPLES = {
    "train": "trainer.max_epochs=5",
    "eval": "ckpt=outputs/<date>/<time>-<id>",
    "export": "ckpt=outputs/<date>/<time>-<id>",
    "predict": "images=photos/",
}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _unparsable(name: str, argument: str) -> UserError:
    """One line for an override Hydra's grammar rejects: which argument, and the grammar's reason."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_rule(argument, "override")
        reason = "bad syntax"
    except HydraException as error:
        reason = str(error)
    return UserError(
        f"cannot parse the argument {argument!r} ({reason}): arguments are key=value overrides, e.g. {EXAMPLES[name]}"
    )


def _bad_value(name: str, given: dict[str, Any], error: ValidationError) -> UserError:
    key = str(error.full_key)
    value = shown(given.get(key))
    known = settings(SCHEMAS[name])
    if key in known:
        return UserError(f"{key}={value!r}: {expected(known[key].field)}")
    return group_of_settings(name, key, value) or UserError(f"{key}={value!r}: {_first_line(error)}")


def check_command_line(name: str, args: list[str]) -> None:
    """Compose ``conf/<name>.yaml`` with ``args`` as Hydra will and check the result (faceattr.config.check); a
    one-line UserError for an override that does not parse, an unknown key or group option, or a bad value.

    Hydra's own flags (``--cfg job``, ``--help``, ``-m``, ...) and sweeps (``key=a,b``) are left to Hydra: then
    nothing is checked here (a sweep's jobs check their own config, faceattr.training).
    """
    if any(arg.startswith("-") for arg in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    register_schemas()
    try:
        overrides = OverridesParser.create().parse_overrides(list(args))
    except OverrideParseException as exc:
        raise _unparsable(name, exc.override) from None
    if any(o.is_sweep_override() for o in overrides):
        return
    given = {o.key_or_group: o.value() for o in overrides if not o.is_delete()}
    for key, value in given.items():
        if key in GROUPS[name]:
            if not isinstance(value, str):
                raise UserError(f"{key}={value!r}: no such option (available: {', '.join(group_options(key))})")
        elif not isinstance(value, dict):
            error = group_of_settings(name, key, value)  # ``data=3`` in eval: Hydra would take data for a group
            if error is not None:
                raise error
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIRS.get(name, CONFIG_DIR)), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(args))
    except MissingConfigException as exc:
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        if group and exc.options is not None:
            raise UserError(f"{group}={option}: no such option (available: {', '.join(exc.options)})") from None
        raise UserError(_first_line(exc)) from None
    except ConfigCompositionException as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            raise _bad_value(name, given, cause) from None
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
            # The key OmegaConf did not find (``data``) is the start of the override's (``data.image_size``).
            missing = str(cause.full_key)
            keys = [o.key_or_group for o in overrides if o.key_or_group.startswith(missing)]
            raise unknown_key(name, next((k for k in keys if k.startswith(missing + ".")), missing)) from None
        raise UserError(f"{_first_line(exc)} ({_first_line(cause)})" if cause else _first_line(exc)) from None
    check_config(cfg, name, given)


def check_or_exit(name: str) -> None:
    """An entry script's first step: a mistake on its command line (``sys.argv``) ends here, in one line
    ``error: ...`` and exit status 2."""
    exit_on_user_error(check_command_line)(name, sys.argv[1:])
