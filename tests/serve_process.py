"""A real `bentoml serve` of the tiny run's model, for the serving tests (test_serve_api.py, test_serve_limits.py,
test_serve_faults.py): start it, find its worker processes, check that it still serves. test_serve_api.py and
test_serve_limits.py share one (``shared_server`` in conftest.py, with :data:`SHARED_LIMITS`). And, for what needs
a model of its own (other attribute names, a face mode, a card) but no server process: a probe model exported in
seconds (:func:`probe_model`) and the service run in this process (:func:`service_in_process`)."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import psutil
import torch
from conftest import REPO, cli_env, run_cli

#: matplotlib's sample photographs: a portrait of Grace Hopper, a clip-art gift box (an RGBA PNG without a face).
SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
#: Seconds `bentoml serve` may take to answer /readyz.
START_TIMEOUT_S = 120

_exports: dict[tuple[Path, tuple[str, ...]], Path] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exported_model(tiny_run: Path, export_args: tuple[str, ...] = ()) -> Path:
    """The model folder of `python export.py ckpt=<tiny run> <export_args>`, exported once per test session."""
    key = (tiny_run, export_args)
    if key not in _exports:
        tmp = Path(tempfile.mkdtemp(prefix="faceattr-export-", dir=tiny_run.parent))
        run_cli("export.py", f"ckpt={tiny_run}", "calibration.num_workers=0", *export_args, tmp_path=tmp)
        _exports[key] = next(p for p in (tmp / "bentoml" / "models" / "faceattr").iterdir() if p.is_dir())
    return _exports[key]


def install_model(tiny_run: Path, tmp: Path, export_args: tuple[str, ...] = ()) -> Path:
    """The tiny run's model (:func:`exported_model`) in the BentoML store of ``tmp`` (``cli_env(tmp)``): its folder."""
    exported = exported_model(tiny_run, export_args)
    model_dir = tmp / "bentoml" / "models" / "faceattr" / exported.name
    shutil.copytree(exported, model_dir)
    shutil.copy(exported.parent / "latest", model_dir.parent / "latest")
    return model_dir


@contextlib.contextmanager
def serving(
    tiny_run: Path, tmp: Path, extra_env: dict[str, str] | None = None, export_args: tuple[str, ...] = ()
) -> Iterator[dict]:
    """The tiny run's model (default export: ONNX and TorchScript, so the service runs ONNX) in a fresh BENTOML_HOME
    under ``tmp``, served by `bentoml serve` on a free port; yields a dict: url, tmp, env, model_dir, tag, log (the
    server's output) and pid (of `bentoml serve`)."""
    model_dir = install_model(tiny_run, tmp, export_args)
    env = {**cli_env(tmp), **(extra_env or {}), "BENTOML_DO_NOT_TRACK": "True"}
    port = free_port()
    log = (tmp / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"bentoml serve exited {process.returncode}:\n{(tmp / 'serve.log').read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError(
                    f"bentoml serve not ready in {START_TIMEOUT_S} s:\n{(tmp / 'serve.log').read_text()}"
                )
            time.sleep(0.5)
        yield {
            "url": url,
            "tmp": tmp,
            "env": env,
            "model_dir": model_dir,
            "tag": f"faceattr:{model_dir.name}",
            "log": tmp / "serve.log",
            "pid": process.pid,
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def service_workers(server: dict, name: str = "FaceAttr") -> list[psutil.Process]:
    """The worker processes of BentoML service ``name`` under `bentoml serve` (``FaceAttr``: the API, which decodes
    uploads and, with the inline runner, runs the model)."""
    workers = []
    for process in psutil.Process(server["pid"]).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            cmdline = process.cmdline()
            if "--service-name" in cmdline and cmdline[cmdline.index("--service-name") + 1] == name:
                workers.append(process)
    return workers


def assert_still_serving(server: dict) -> None:
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    response = httpx.post(server["url"] + "/predict", files={"image": ("a.jpg", photo)}, timeout=60)
    assert response.status_code == 200, response.text
    assert "Traceback" not in server["log"].read_text()


def refused_start(env: dict[str, str]) -> tuple[int, list[str]]:
    """`bentoml serve` from the repo root with ``env``, expected to refuse: (exit status, non-empty output lines)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


#: The settings of the server that test_serve_api.py and test_serve_limits.py share (conftest.py, ``shared_server``):
#: small limits, so that the too-large requests and the decompression bombs are cheap to send and to refuse.
SHARED_LIMITS = {
    "FACEATTR_SERVE_MAX_IMAGE_BYTES": "200000",
    "FACEATTR_SERVE_MAX_REQUEST_BYTES": "400000",
    "FACEATTR_SERVE_MAX_IMAGE_PIXELS": "4000000",
    "FACEATTR_SERVE_MAX_DECODE_PIXELS": "8000000",
    "FACEATTR_SERVE_MAX_IMAGES_PER_REQUEST": "8",
}


class ProbeModel(torch.nn.Module):
    """A model with ``n`` outputs whose probabilities depend on the photo (its mean colour), some clearly above 0.5
    and some clearly below: what :func:`probe_model` exports instead of a trained network."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.linspace(-4.0, 4.0, 3 * n).reshape(3, n))
        self.register_buffer("bias", torch.linspace(-3.0, 3.0, n))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bias + (images.mean(dim=(2, 3)) - 0.5) @ self.weight)


def probe_model(
    folder: Path,
    attributes: tuple[str, ...],
    face_alignment: str = "celeba",
    test_rates: dict[str, dict[str, float]] | None = None,
    card: str | None = None,
) -> Path:
    """An export folder, as export writes one (``model.pt`` and ``faceattr.json`` with the model's contract), of a
    :class:`ProbeModel` with ``attributes`` at 32x32 (and ``MODEL_CARD.md`` when ``card`` is given): for the tests of
    the serving code on a model of any attribute names, in seconds."""
    from faceattr.artefacts import quiet_torchscript
    from faceattr.contract import ModelContract
    from faceattr.layout import METADATA_FILE, MODEL_CARD_FILE

    contract = ModelContract(
        backbone="probe",
        attributes=attributes,
        image_size=(32, 32),
        crop=(178, 178),
        jpeg_scaling=True,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        face_alignment=face_alignment,
    )
    metadata = {"contract": contract.to_json(), "formats": {"torchscript": "model.pt"}}
    if test_rates is not None:  # what export measures on the test split, e.g. {"positive_rates": {name: rate}}
        metadata["metrics"] = {"test": test_rates}
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metadata, ensure_ascii=False)
    with quiet_torchscript():
        torch.jit.script(ProbeModel(len(attributes)).eval()).save(
            str(folder / "model.pt"), _extra_files={METADATA_FILE: text}
        )
    (folder / METADATA_FILE).write_text(text, encoding="utf-8")
    if card is not None:
        (folder / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    return folder


@contextlib.contextmanager
def stored_probe_model(name: str, **kwargs) -> Iterator[tuple[str, Path]]:
    """A :func:`probe_model` saved into this process's BentoML store as model ``name`` (removed afterwards): its tag
    and folder."""
    import bentoml

    with bentoml.models.create(name) as model:
        probe_model(Path(model.path), **kwargs)
    try:
        yield str(model.tag), Path(bentoml.models.get(model.tag).path)  # the store's folder, once saved
    finally:
        bentoml.models.delete(model.tag)


_loaded_services = 0


@contextlib.contextmanager
def service_in_process(tag: str, **settings: str) -> Iterator[Any]:
    """faceattr/serve/service.py imported afresh (as each `bentoml serve` worker imports it) to serve model ``tag``
    of this process's BentoML store with ``FACEATTR_SERVE_<KEY>`` ``settings``, behind BentoML's own ASGI app, in this
    process, without BentoML's metrics: yields a Starlette TestClient with the module as ``client.service``."""
    global _loaded_services
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.configuration.containers import BentoMLContainer
    from starlette.testclient import TestClient

    saved_env, saved_config = dict(os.environ), copy.deepcopy(BentoMLContainer.config.get())
    os.environ.update({"FACEATTR_SERVE_MODEL": tag, **{f"FACEATTR_SERVE_{k.upper()}": v for k, v in settings.items()}})
    try:
        _loaded_services += 1
        spec = importlib.util.spec_from_file_location(
            f"faceattr_service_{_loaded_services}", REPO / "faceattr" / "serve" / "service.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.FaceAttr.inject_config()  # what each worker does at start: the service's settings into BentoML's
        with TestClient(ServiceAppFactory(module.FaceAttr, is_main=True, enable_metrics=False)()) as client:
            client.service = module
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        BentoMLContainer.config.set(saved_config)
