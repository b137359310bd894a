"""The library lines a run prints that tell the user nothing about their run, silenced one by one.

Why: a newcomer's first run (``make quickstart``) should show our lines and Lightning's progress, not a library's
advertisement or a deprecation inside another library that the user can do nothing about. Each line is matched by
its own text and the module that emits it, so every other warning, a new one or one about the user's config (too few
loader workers, fewer batches than the logging interval), still shows. The entry scripts (train.py, eval.py,
export.py, predict.py) call :func:`quiet_libraries` at the start of their ``main``, which runs in every job process
of a sweep too (a joblib worker, a DDP rank). Nothing here changes Python's warning or logging defaults otherwise.

Checked against Lightning 2.6.6 and torch 2.14 (``tests/test_quiet.py`` runs an entry and reads its output).
"""

from __future__ import annotations

import logging
import warnings

#: Where Lightning's ``rank_zero_info`` lines are logged (Lightning points ``lightning_utilities``' rank-zero helpers
#: at its own logger; Fabric's is the one they use when only Fabric is imported).
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")

#: INFO lines of Lightning that are not about the run, by how they start:
#: - the advertisement for its cloud logger, logged on every Trainer(...) without LitLogger
#:   (``trainer/connectors/logger_connector/logger_connector.py``);
#: - the note that the default model summary is skipped because conf/callbacks/default.yaml configures one
#:   (``trainer/connectors/callback_connector.py``): our own choice, not the user's.
LIGHTNING_NOISE = (
    "💡 Tip: For seamless cloud logging",
    "Trainer already configured with model summary callbacks",
)

#: torch 2.14 deprecates constructing ``torch.utils._pytree.LeafSpec``; Lightning 2.6's own pytree helper still does,
#: once per fit and per test, and the FutureWarning points at that helper's line.
DEPRECATIONS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
)


class DropLines(logging.Filter):
    """A logger filter that drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_libraries() -> None:
    """Silence :data:`LIGHTNING_NOISE` and :data:`DEPRECATIONS`; calling it again adds nothing."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, DropLines) for existing in logger.filters):
            logger.addFilter(DropLines(LIGHTNING_NOISE))
    for message, category, module in DEPRECATIONS:
        # An identical filter is moved to the front rather than added twice (the warnings module's rule).
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
