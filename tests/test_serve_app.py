"""The service in this process (faceattr/serve/service.py behind BentoML's own ASGI app, ``serve_process.
service_in_process``) on probe models exported in seconds (``serve_process.probe_model``): what depends on the model
rather than on a server process. Attribute names from the data (spaces, unicode, quotes) through /predict,
/predict_batch and the drift metrics; the model card at /model_card and in the OpenAPI document; the landing page's
description; the face default that the model's contract gives, and the settings that win over it."""

from __future__ import annotations

import logging
import secrets

import numpy as np
import prometheus_client
import pytest
import torch
from openapi_spec_validator import validate
from serve_process import SAMPLES, ProbeModel, service_in_process, stored_probe_model

import faceattr
from faceattr.serve.images import load_and_preprocess

#: Names a data=folder CSV may give its columns.
NAMES = ("Brille auf", "Lächeln", "黒髪", "Big Nose", 'Hair "long", curly')
CARD = "# Model card: probe\n\n## Caveats\n\nTrained on nothing; names like «Lächeln» stay as they are.\n"


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _expected(photo: bytes) -> np.ndarray:
    """The probe model's probabilities for a photo's centre crop (the service's preprocessing, torch alone)."""
    pixels = torch.from_numpy(load_and_preprocess(photo, (32, 32), (178, 178), jpeg_scaling=True))
    with torch.no_grad():
        return ProbeModel(len(NAMES))(pixels[None].float() / 255)[0].numpy()


def _present(name: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value("faceattr_attribute_present_total", {"attribute": name}) or 0.0


def test_attribute_names_from_the_data_flow_through_both_endpoints_and_the_drift_metrics():
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    gift = (SAMPLES / "Minduka_Present_Blue_Pack.png").read_bytes()
    rates = {
        "positive_rates": dict(zip(NAMES, (0.1, 0.2, 0.3, 0.4, 0.5))),
        "predicted_positive_rates": {**dict(zip(NAMES, (0.15, 0.25, 0.35, 0.45, 0.55))), NAMES[0]: None},
    }
    with (
        stored_probe_model(_unique("names"), attributes=NAMES, test_rates=rates) as (tag, _),
        service_in_process(tag) as client,
    ):
        expected = {"photo": _expected(photo), "gift": _expected(gift)}
        assert all(np.abs(p - 0.5).min() > 1e-3 for p in expected.values())  # membership is unambiguous
        present = {key: [n for n, p in zip(NAMES, probs) if p >= 0.5] for key, probs in expected.items()}
        assert present["photo"] and len(present["photo"]) < len(NAMES)
        before = {name: _present(name) for name in NAMES}

        answer = client.post("/predict", files={"image": ("a.jpg", photo)})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == tag and list(body["attributes"]) == list(NAMES)
        assert np.abs(np.array(list(body["attributes"].values())) - expected["photo"]).max() <= 1e-6
        assert body["present"] == present["photo"]
        assert "Lächeln" in answer.content.decode("utf-8")  # UTF-8 as it is, not \u-escaped only

        files = [("images", ("a.jpg", photo)), ("images", ("b.png", gift))]
        answer = client.post("/predict_batch", files=files)
        assert answer.status_code == 200, answer.text
        first, second = answer.json()["predictions"]
        assert list(first["attributes"]) == list(second["attributes"]) == list(NAMES)
        assert (first["present"], second["present"]) == (present["photo"], present["gift"])

        counted = {name: _present(name) - before[name] for name in NAMES}
        assert counted == {name: (name in present["photo"]) * 2 + (name in present["gift"]) for name in NAMES}
        for gauge, key in (("positive", "positive_rates"), ("predicted", "predicted_positive_rates")):
            name = f"faceattr_attribute_test_{gauge}_rate"
            assert {n: prometheus_client.REGISTRY.get_sample_value(name, {"attribute": n}) for n in NAMES} == rates[key]


def test_the_model_card_is_served_as_markdown_and_documented_on_the_landing_page():
    with (
        stored_probe_model(_unique("card"), attributes=NAMES, card=CARD) as (tag, folder),
        service_in_process(tag) as client,
    ):
        answer = client.get("/model_card")
        assert answer.status_code == 200 and answer.headers["content-type"] == "text/markdown; charset=utf-8"
        assert answer.content.decode("utf-8") == CARD
        head = client.head("/model_card")
        assert head.status_code == 200 and head.content == b""

        document = client.get("/docs.json").json()
        validate(document)  # still valid OpenAPI 3.0 with the route and the description added
        card = document["paths"]["/model_card"]["get"]
        assert set(card["responses"]["200"]["content"]) == {"text/markdown"}
        assert set(card["responses"]["404"]["content"]) == {"application/json"}
        info = document["info"]
        assert (info["title"], info["version"]) == ("faceattr", faceattr.__version__)
        text = info["description"]
        for needed in (
            tag,
            "/predict",
            "/predict_batch",
            "/model_card",
            "/metrics",
            f"faceattr {faceattr.__version__}",
        ):
            assert needed in text, needed
        assert "`Lächeln`" in text and "`face` default `center`" in text
        for default in ("created with BentoML", "img.shields.io", "customize this README", "badge"):
            assert default not in text, default
        assert "(./model_card)" in text  # a link to the card

        (folder / "MODEL_CARD.md").unlink()  # as a model exported by an older faceattr
        answer = client.get("/model_card")
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"
        error = answer.json()["error"]
        assert "\n" not in error and error.startswith(f"model {tag} has no model card (MODEL_CARD.md)")
        assert error.endswith("export it again with this faceattr: python export.py ckpt=<its run dir>")
        assert client.post("/model_card").status_code in (404, 405)  # only GET and HEAD are the card's


@pytest.mark.parametrize(
    ("alignment", "settings", "face"),
    [
        ("detect", {}, "detect"),  # face: auto (default.yaml) -> the model's own
        ("celeba", {}, "center"),
        ("detect", {"face": "center"}, "center"),  # an explicit setting wins over the model's
    ],
)
def test_the_face_default_comes_from_the_models_contract_unless_set(alignment, settings, face, caplog):
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    with (
        stored_probe_model(_unique("face"), attributes=("Smiling",), face_alignment=alignment) as (tag, _),
        caplog.at_level(logging.WARNING, logger="faceattr"),
        service_in_process(tag, **settings) as client,
    ):
        assert client.service.CONFIG.face == face
        schema = client.get("/docs.json").json()["components"]["schemas"]["PredictInput"]["properties"]["face"]
        assert schema["default"] == face
        assert f"`face` default `{face}`" in client.get("/docs.json").json()["info"]["description"]
        answer = client.post("/predict", files={"image": ("a.jpg", photo)}).json()
        assert (answer["face"] is not None) == (face == "detect")  # the detector found Grace Hopper's face
        chosen = client.post("/predict", files={"image": ("a.jpg", photo)}, data={"face": "center"}).json()
        assert chosen["face"] is None  # a request's own choice always wins
        warned = [r.getMessage() for r in caplog.records if "was trained on" in r.getMessage()]
        assert bool(warned) == (alignment == "detect" and face == "center"), warned
