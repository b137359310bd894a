"""How the service refuses a request: the :class:`Rejected` exception inside the API, and :func:`rejected`, the
counted ``{"error": "..."}`` answer that the endpoints and the upload guard send."""

from __future__ import annotations

from starlette.responses import JSONResponse

from faceattr.serve.metrics import count_rejected


class Rejected(Exception):
    """A request answered with an error status and message instead of a prediction."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def rejected(status: int, message: str) -> JSONResponse:
    """Count a rejected request and answer it with ``{"error": message}`` (and ``Retry-After: 1`` for a 503)."""
    count_rejected(status)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
