"""What the service answers besides predictions, and how its documentation presents it: ``GET /model_card`` (the
served model's ``MODEL_CARD.md``, which export writes into the model's folder in the store) and the landing page of
the Swagger UI (``/``), which renders the OpenAPI document's ``info``.

BentoML 1.4 fills ``info`` with a README of its own (``This is a Machine Learning Service created with BentoML``,
badges fetched from the internet, "customize this README", version "None" outside a Bento, and a Bento's
``description`` inside one), and its APIs are POST endpoints with a body; a GET route answering Markdown is
neither. So the card is answered by an ASGI middleware in front of the service (:class:`ModelCardRoute`), and
:func:`describe_service` rewrites the document that ``bentoml_workarounds.OpenAPI3Document`` serves: ``info`` says
what the service answers, the model's tag, its card and the faceattr version, and ``paths`` lists ``/model_card``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

import faceattr
from faceattr.layout import MODEL_CARD_FILE
from faceattr.serve.config import ServeConfig
from faceattr.serve.runtime import ModelInfo

MODEL_CARD_ROUTE = "/model_card"
CARD_TYPE = "text/markdown; charset=utf-8"
#: The OpenAPI tag of the service's own GET routes (BentoML's APIs and infrastructure routes have theirs).
OPENAPI_TAG = {"name": "Model", "description": "What the served model is: its card"}


def missing_card(tag: str) -> str:
    """The 404 answer of ``/model_card`` for a model exported without a card."""
    return (
        f"model {tag} has no model card ({MODEL_CARD_FILE}): it was exported by an older faceattr; export it again "
        "with this faceattr: python export.py ckpt=<its run dir>"
    )


class ModelCardRoute:
    """ASGI middleware answering ``GET /model_card`` (and HEAD) with the model's card, read from its folder in the
    store at each request, as ``text/markdown``; 404 with one JSON line ``{"error": ...}`` when there is none."""

    def __init__(self, app: ASGIApp, model: ModelInfo) -> None:
        self.app = app
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("path") != MODEL_CARD_ROUTE
            or scope.get("method") not in ("GET", "HEAD")
        ):
            await self.app(scope, receive, send)
            return
        card = self.model.model_card()
        if card is None:
            status, kind = 404, "application/json"
            body = json.dumps({"error": missing_card(self.model.tag)}).encode()
        else:
            status, kind, body = 200, CARD_TYPE, card.encode("utf-8")
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def card_path_item() -> dict[str, Any]:
    """``/model_card`` in the OpenAPI document."""
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    return {
        "get": {
            "tags": [OPENAPI_TAG["name"]],
            "summary": "The model card",
            "description": f"The served model's {MODEL_CARD_FILE} (Mitchell et al., 2019), written at export: what "
            "it is for and not for, its results by subgroup with 95% intervals, worst groups, calibration, caveats.",
            "operationId": "model_card",
            "responses": {
                "200": {
                    "description": "the card, Markdown",
                    "content": {"text/markdown": {"schema": {"type": "string"}}},
                },
                "404": {
                    "description": "the model was exported without a card (export it again)",
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
    }


def landing_text(model: ModelInfo, config: ServeConfig) -> str:
    """The Swagger UI's landing text (Markdown): what the service answers, the model, its card, faceattr's version."""
    contract = model.contract
    names = ", ".join(f"`{name}`" for name in model.attributes)
    card = (
        f"[`GET {MODEL_CARD_ROUTE}`](.{MODEL_CARD_ROUTE}): what the model is for and not for, its results by "
        "subgroup, calibration and caveats."
        if model.card_path.is_file()
        else f"none: the model was exported without one (`GET {MODEL_CARD_ROUTE}` answers 404); export it again."
    )
    height, width = model.image_size
    routes = [
        ("POST /predict", "one photo (multipart field `image`): each attribute's probability and those present"),
        (
            "POST /predict_batch",
            f"up to {config.max_images_per_request} photos (field `images`, repeated), one answer each",
        ),
        (f"GET {MODEL_CARD_ROUTE}", "the model card (Markdown)"),
        ("GET /metrics", "Prometheus metrics, with `faceattr_attribute_present_total` for drift"),
        ("GET /readyz, GET /livez", "readiness and liveness"),
        ("GET /docs.json", "this OpenAPI 3 document"),
    ]
    lines = [  # BentoML's page hides the document's title (its index.css): the heading names the service
        f"## faceattr {faceattr.__version__}: face attributes of photos",
        "",
        "The probability of each of the model's attributes, and those present "
        f"(probability at or above the {config.threshold_mode} threshold).",
        "",
        f"**Model** `{model.tag}`: {contract.backbone}, {len(model.attributes)} attributes, {height}x{width} input; "
        f"`face` default `{config.face}` (center: the photo's centre crop | detect: the face a detector finds).",
        "",
        f"**Model card**: {card}",
        "",
        "| route | answers |",
        "| --- | --- |",
        *(f"| `{route}` | {what} |" for route, what in routes),
        "",
        f"**Attributes**: {names}.",
    ]
    return "\n".join(lines)


def describe_service(model: ModelInfo, config: ServeConfig) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What ``OpenAPI3Document`` applies to BentoML's document: the service's own ``info`` (title, the faceattr
    version, :func:`landing_text`) and the ``/model_card`` path."""

    def amend(document: dict[str, Any]) -> dict[str, Any]:
        info = {"title": "faceattr", "version": faceattr.__version__, "description": landing_text(model, config)}
        paths = {**document.get("paths", {}), MODEL_CARD_ROUTE: card_path_item()}
        tags = [tag for tag in document.get("tags", []) if tag.get("name") != OPENAPI_TAG["name"]] + [OPENAPI_TAG]
        return {**document, "info": info, "paths": paths, "tags": tags}

    return amend
