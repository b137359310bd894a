"""Where the service depends on how BentoML behaves beyond its documented API, or works around that behaviour.

Each item was written for, and is checked against, BentoML 1.4.40, the version that pyproject.toml and
bentofile.yaml pin: tests/test_bentoml_workarounds.py pins that version and fails when BentoML stops behaving as
described here, so that a BentoML upgrade starts with a look at this module.
"""

from __future__ import annotations

from pathlib import Path

BENTOML_VERSION = "1.4.40"

#: The ``runner_connection`` setting of the model service (``runner: service``). BentoML's inter-service client
#: replaces its HTTP session every ``max_requests`` requests (default 100) or ``max_age`` seconds (default 300) by
#: closing the old one, which kills the requests still in flight on it ("Cannot write to closing transport", a 500
#: under concurrent load). These values keep one session for the life of the API process.
KEEP_MODEL_CONNECTION = {"max_requests": 2**62, "max_age": 1e12}


def is_upload(path: Path) -> bool:
    """True for a file BentoML wrote for this request (never a path named by the client).

    BentoML stores each uploaded file of a ``Path`` parameter in the request's temporary directory
    (``bentoml._internal.context.request_temp_dir``, not public API); anything else is not an upload.
    """
    from bentoml._internal.context import request_temp_dir

    try:
        return Path(path).resolve().is_relative_to(Path(request_temp_dir()).resolve())
    except (OSError, RuntimeError, LookupError, TypeError, ValueError):  # fail closed: not an upload
        return False
