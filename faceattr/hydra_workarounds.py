"""Where faceattr depends on how Hydra behaves beyond its documented API.

Written for, and checked against, Hydra 1.3.8, the version pyproject.toml pins: tests/test_hydra_workarounds.py pins
that version and fails when Hydra stops behaving as described here (it runs a real sweep and compares its jobs), so
that a Hydra upgrade starts with a look at this module. Nothing else in ``faceattr/`` reads Hydra's internals.
"""

from __future__ import annotations

from typing import Any

HYDRA_VERSION = "1.3.8"

#: ``hydra.sweeper._target_`` of Hydra's own (basic) sweeper, ``hydra/sweeper=basic``: the class lives in Hydra's
#: private package, so this is also how a sweep's config says that the basic sweeper runs it.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def basic_sweeper_jobs(params: dict[str, Any], overrides: list[str]) -> list[list[str]]:
    """The overrides of every job the basic sweeper launches, in job-number order, for its ``hydra.sweeper.params``
    and the command line's ``overrides``.

    Job ``n`` of a sweep is its ``n``-th combination in the sweeper's own order (the params first, then the command
    line; a key given twice keeps its first place and its last value; the last key varies fastest). Hydra documents
    no function that gives that list before the sweep runs, so this asks the sweeper's own ``split_arguments``
    (a static method of the private class), fed as its ``sweep`` feeds it. Raises what Hydra raises for a sweep it
    cannot expand without its config loader (``glob()``) or does not support (a range of floats).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]
