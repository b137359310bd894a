"""User errors: expected mistakes (a missing folder, a bad override) reported as one line, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and how to fix it."""


def find_user_error(exc: BaseException) -> UserError | None:
    """Return the UserError behind ``exc`` (Hydra's instantiate and DataLoader workers wrap it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(error: UserError) -> str:
    """The user-facing line of ``error``.

    A UserError raised inside a DataLoader worker comes back re-created with the worker's whole traceback as its
    message; the line we wrote is the last one, after the class name.
    """
    text = str(error).strip()
    last = text.splitlines()[-1] if text else type(error).__name__
    marker = "UserError: "
    return last.split(marker, 1)[1] if marker in last and "\n" in text else last


def exit_on_user_error(func: F) -> F:
    """Decorate an entry point: a UserError anywhere below becomes ``error: <line>`` on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
            user_error = find_user_error(exc)
            if user_error is None:
                raise
            print(f"error: {one_line(user_error)}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
