"""faceattr/serve/bentoml_workarounds.py against the installed BentoML: the pinned version, and for each item the
BentoML behaviour it relies on or works around. A BentoML upgrade that changes any of them fails here first."""

from __future__ import annotations

import asyncio
import copy
import io
from pathlib import Path

import bentoml
import pytest
from conftest import REPO
from starlette.datastructures import UploadFile
from starlette.requests import Request

from faceattr.serve.bentoml_workarounds import BENTOML_VERSION, KEEP_MODEL_CONNECTION, is_upload


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


def test_uploads_are_files_in_the_request_temp_dir(tmp_path):
    """is_upload relies on BentoML writing each uploaded file of a ``Path`` parameter into the request's temporary
    directory, whatever the client's file name; a path given as the value itself is passed on as it is."""
    from _bentoml_sdk.io_models import IODescriptor
    from bentoml._internal.context import ServiceContext

    def predict(self, image: Path) -> None: ...

    inputs = IODescriptor.from_input(predict, skip_self=True)
    elsewhere = tmp_path / "photo.jpg"
    elsewhere.write_bytes(b"not uploaded")
    request = Request({"type": "http", "method": "POST", "path": "/predict", "headers": []})
    with ServiceContext().in_request(request):
        upload = inputs.model_validate({"image": UploadFile(io.BytesIO(b"jpeg bytes"), filename="../../x.jpg")}).image
        assert upload.read_bytes() == b"jpeg bytes" and is_upload(upload)
        passed_on = inputs.model_validate({"image": elsewhere}).image
        assert passed_on == elsewhere and not is_upload(passed_on)
    assert not is_upload(upload)  # outside a request: nothing is an upload
