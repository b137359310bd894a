"""faceattr/serve/bentoml_workarounds.py against the installed BentoML: the pinned version, and for each item the
BentoML behaviour it relies on or works around. A BentoML upgrade that changes any of them fails here first."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import bentoml
import pytest
from conftest import REPO
from openapi_spec_validator import validate
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from faceattr.serve.bentoml_workarounds import BENTOML_VERSION, KEEP_MODEL_CONNECTION, OpenAPI3Document, openapi3
from faceattr.serve.schemas import BatchPrediction, Prediction, upload_inputs, upload_route
from faceattr.serve.upload_guard import UploadGuard


def test_bentoml_is_the_pinned_version():
    assert bentoml.__version__ == BENTOML_VERSION
    assert f'"bentoml=={BENTOML_VERSION}"' in (REPO / "pyproject.toml").read_text()
    assert f'"bentoml=={BENTOML_VERSION}"' in (REPO / "bentofile.yaml").read_text()


@pytest.fixture
def bentoml_config():
    """BentoML's global configuration, restored after the test (declaring services changes it)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    saved = copy.deepcopy(BentoMLContainer.config.get())
    yield
    BentoMLContainer.config.set(saved)


def _sessions_of_model_client(name: str, requests: int, **model_config) -> int:
    """How many HTTP sessions BentoML's client of a model service declared with ``model_config`` goes through in
    ``requests`` calls, set up as in an API worker that depends on that service (no request is sent)."""
    from _bentoml_impl.client import RemoteProxy

    @bentoml.service(name=f"{name}Model", **model_config)
    class Model:
        @bentoml.api
        def infer(self, x: int) -> int:
            return x

    @bentoml.service(name=f"{name}Api")
    class Api:
        model = bentoml.depends(Model)

        @bentoml.api
        def predict(self, x: int) -> int:
            return x

    Api.inject_config()  # what each worker does at start: the services' settings into BentoML's configuration
    manager = RemoteProxy("http://127.0.0.1:1", service=Model).to_async._session_manager

    async def sessions() -> int:
        used = [await manager.get_session() for _ in range(requests)]  # kept alive: distinct ids are distinct
        await manager.close()
        return len({id(session) for session in used})

    return asyncio.run(sessions())


def test_the_model_client_keeps_its_session_with_keep_model_connection(bentoml_config):
    """The worked-around behaviour: by default the client replaces (closes) its session every 100 requests; with
    KEEP_MODEL_CONNECTION on the model service, as service.py declares FaceAttrModel, it keeps one."""
    assert _sessions_of_model_client("Default", 250) >= 2
    assert _sessions_of_model_client("Kept", 1000, runner_connection=KEEP_MODEL_CONNECTION) == 1


def _served_in_process(service) -> TestClient:
    """``service`` behind BentoML's own ASGI app (what each ``bentoml serve`` worker runs), in this process, without
    its metrics (registered once per process)."""
    from _bentoml_impl.server.app import ServiceAppFactory

    service.inject_config()
    return TestClient(ServiceAppFactory(service, is_main=True, enable_metrics=False)())


def _probe_service(name: str, amend=None):
    """A service with faceattr's request and answer specs (schemas.py) behind the upload reader and the OpenAPI 3
    document, whose endpoints echo what they were given."""
    predict_input, batch_input = upload_inputs("center")

    @bentoml.service(name=name)
    class Probe:
        @bentoml.api(route="/predict", input_spec=predict_input, output_spec=Prediction)
        async def predict(self, image: bytes, face: Any, faces: Any) -> JSONResponse:
            return JSONResponse({"image": image.decode(), "face": face, "faces": faces}, status_code=201)

        @bentoml.api(route="/predict_batch", input_spec=batch_input, output_spec=BatchPrediction)
        async def predict_batch(self, images: list[bytes], face: Any) -> JSONResponse:
            return JSONResponse({"images": [data.decode() for data in images], "face": face})

    routes = {"/predict": upload_route(predict_input), "/predict_batch": upload_route(batch_input, 3)}
    Probe.add_asgi_middleware(UploadGuard, max_bytes=10_000, routes=routes)
    Probe.add_asgi_middleware(OpenAPI3Document, amend=amend)
    return Probe


def test_endpoints_get_the_upload_the_reader_read(bentoml_config):
    """ReadUpload relies on BentoML building an endpoint's arguments with its input spec's from_http_request: the
    endpoint gets the reader's bytes (BentoML's own parsing would give a Path to a temporary file), the options as
    the reader decoded them or the spec's defaults, and its answer's status."""
    with _served_in_process(_probe_service("ReadUploadProbe")) as client:
        answer = client.post("/predict", files={"image": ("a.jpg", b"jpeg bytes")}, data={"face": '"detect"'})
        assert (answer.status_code, answer.json()) == (
            201,
            {"image": "jpeg bytes", "face": "detect", "faces": "largest"},
        )
        files = [("images", (f"{i}.jpg", f"photo {i}".encode())) for i in range(3)]
        answer = client.post("/predict_batch", files=files, data={"face": "1"})
        assert answer.json() == {"images": ["photo 0", "photo 1", "photo 2"], "face": 1}
        answer = client.post("/predict_batch", files=[*files, ("images", ("3.jpg", b"x"))])
        assert answer.status_code == 413 and "4 images in one request; the limit is 3" in answer.json()["error"]


def test_the_openapi_document_is_rewritten_as_valid_openapi_3(bentoml_config):
    """BentoML writes an upload as ``"type": "file"`` and an optional field with ``{"type": "null"}`` in its
    OpenAPI 3.0 document (openapi-spec-validator refuses it); OpenAPI3Document serves it valid, with the upload as
    ``type: string, format: binary``; /schema.json, which BentoML's clients read, keeps BentoML's spelling."""
    probe = _probe_service("OpenAPIProbe")
    written = json.loads(json.dumps(probe.openapi_spec.asdict()))
    with pytest.raises(Exception):  # noqa: B017 - the validator raises several kinds of errors
        validate(written)
    assert written["components"]["schemas"]["PredictInput"]["properties"]["image"]["type"] == "file"
    with _served_in_process(probe) as client:
        served = client.get("/docs.json").json()
        validate(served)
        assert served == openapi3(written)
        image = served["components"]["schemas"]["PredictInput"]["properties"]["image"]
        assert (image["type"], image["format"]) == ("string", "binary")
        images = served["components"]["schemas"]["PredictBatchInput"]["properties"]["images"]["items"]
        assert images == {"type": "string", "format": "binary"}
        predict = next(api for api in client.get("/schema.json").json()["routes"] if api["route"] == "/predict")
        assert predict["input"]["properties"]["image"]["type"] == "file"


def test_the_swagger_ui_shows_the_documents_info_which_openapi3document_rewrites(bentoml_config):
    """What pages.describe_service relies on: BentoML's Swagger UI (``/``) renders ``/docs.json``, whose ``info`` is
    BentoML's own README outside a Bento (its badges and "customize this README", version "None"), and ``amend``
    replaces it in the document served."""
    written = _probe_service("InfoProbe").openapi_spec.asdict()
    assert "This is a Machine Learning Service created with BentoML" in written["info"]["description"]
    assert written["info"]["version"] == "None"

    def amend(document: dict[str, Any]) -> dict[str, Any]:
        return {**document, "info": {"title": "probe", "version": "1.2.3", "description": "What it answers."}}

    with _served_in_process(_probe_service("AmendedInfoProbe", amend)) as client:
        served = client.get("/docs.json").json()
        validate(served)
        assert served["info"] == {"title": "probe", "version": "1.2.3", "description": "What it answers."}
        assert set(served["paths"]) == set(written["paths"])  # the rest of the document as it was
        page = client.get("/")
        assert page.status_code == 200 and "swagger-initializer.js" in page.text
        assert 'url: "./docs.json"' in client.get("/static_content/swagger-initializer.js").text
