"""What a setting's value must be, beside its type: declared on the dataclass field that defines the setting.

``setting(default, check=..., problem=...)`` is a dataclass ``field`` carrying a predicate and the words that say what
was expected; :func:`problem_with` applies them, :func:`expected` says in words what a field takes. The entry
scripts' schemas (faceattr/config/, with Hydra) and the service's settings (faceattr/serve/config.py, without Hydra)
declare their fields this way, so there is one place that says what each value must be. A kind of value several
schemas hold (a batch size, a worker count, ...) is one :class:`Bound` below, which every schema with such a key
declares its field with (``data.num_workers`` of train and eval alike). Plain Python: the service imports it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

#: Field metadata keys.
CHECK = "check"
PROBLEM = "problem"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    check: Callable[[Any], bool] | None = None,
    problem: str | None = None,
    **field_kwargs: Any,
) -> Any:
    """A dataclass field whose value must also pass ``check``; ``problem`` says what is expected (e.g. ``expected an
    integer >= 1``) when the value fails the check or is not of the field's type."""
    metadata = {CHECK: check, PROBLEM: problem}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, **field_kwargs)
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


def problem_text(field: dataclasses.Field) -> str | None:
    """What ``field``'s value is expected to be, in words, if the field says."""
    return field.metadata.get(PROBLEM)


#: What a value of each type is, in words (:func:`type_words`).
TYPE_WORDS = (("int", "an integer"), ("float", "a number"), ("bool", "true or false"), ("str", "a string"))


def type_words(field: dataclasses.Field) -> str:
    """``expected an integer``: what the field's type takes, in words."""
    kind = str(field.type)
    for name, words in TYPE_WORDS:
        if re.search(rf"\b{name}\b", kind):
            return f"expected {words}"
    return "expected a valid value"


def expected(field: dataclasses.Field) -> str:
    """What ``field``'s value must be, in words: its ``problem`` text, else what its type takes."""
    return problem_text(field) or type_words(field)


def problem_with(field: dataclasses.Field, value: Any) -> str | None:
    """The field's ``problem`` text when ``value`` (already of the field's type) fails its check; None if it passes.
    ``None`` always passes: whether a field may be null is its type's business."""
    check = field.metadata.get(CHECK)
    if check is None or value is None:
        return None
    try:
        ok = bool(check(value))
    except (TypeError, ValueError):
        ok = False
    return None if ok else (field.metadata.get(PROBLEM) or "invalid value")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: is_number(value) and value >= low


def between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda value: is_number(value) and low <= value <= high


def one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: value in choices


def less_than(low: float, high: float) -> Callable[[Any], bool]:
    """``low <= value < high``."""
    return lambda value: is_number(value) and low <= value < high


@dataclasses.dataclass(frozen=True)
class Bound:
    """A kind of value with its check and the words saying what it takes (``an integer >= 1``)."""

    check: Callable[[Any], bool]
    words: str

    def field(self, default: Any = dataclasses.MISSING, *, optional: bool = False, note: str = "") -> Any:
        """A :func:`setting` of this kind; ``optional``: null is allowed too (and the words say so)."""
        return setting(
            default, check=self.check, problem=f"expected {'null or ' if optional else ''}{self.words}{note}"
        )


def _epochs(value: Any) -> bool:
    return is_number(value) and (value == -1 or value >= 1)


#: The kinds of value the schemas share: one definition each (faceattr/config/).
BATCH_SIZE = Bound(at_least(1), "an integer >= 1")
WORKERS = Bound(at_least(0), "an integer >= 0 (0: load in the main process)")
IMAGE_COUNT = Bound(at_least(1), "an integer >= 1 (images)")
THREADS = Bound(at_least(1), "an integer >= 1")
SEED = Bound(between(0, 2**32 - 1), f"an integer in [0, {2**32 - 1}]")
EPOCHS = Bound(_epochs, "an integer >= 1 (or -1: no limit)")
MIN_EPOCHS = Bound(at_least(0), "an integer >= 0")
EVERY_N = Bound(at_least(1), "an integer >= 1")
LOG_EVERY_N_STEPS = Bound(at_least(0), "an integer >= 0 (0: never)")
LEARNING_RATE = Bound(at_least(0), "a number >= 0 (0: the weights do not move)")
NON_NEGATIVE = Bound(at_least(0), "a number >= 0")
FRACTION = Bound(between(0, 1), "a number in [0, 1]")
DROP_RATE = Bound(less_than(0, 1), "a number in [0, 1)")
