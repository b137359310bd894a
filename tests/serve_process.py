"""A real `bentoml serve` of the tiny run's model, for the serving tests (test_serve_api.py, test_serve_limits.py,
test_serve_faults.py): start it, find its worker processes, check that it still serves. test_serve_api.py and
test_serve_limits.py share one (``shared_server`` in conftest.py, with :data:`SHARED_LIMITS`)."""

from __future__ import annotations

import contextlib
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

import httpx
import matplotlib
import psutil
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
