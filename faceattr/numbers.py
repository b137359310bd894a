"""Small numeric helpers shared by run records, sweep summaries and export (no heavy imports)."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float (a number, a numeric string, a 0-d tensor), or None if it is missing, NaN or infinite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
