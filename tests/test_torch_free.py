"""The CPU service without torch (issue 23): with the ONNX artefact, faceattr/serve/service.py imports, starts and
answers /predict in an interpreter where torch cannot be imported, as in the CPU Bento (``bentofile.cpu.yaml``).

torch is already imported in the test process (the tiny run trained here), so the service runs in a fresh Python
whose import system refuses torch and torchvision, behind BentoML's own ASGI app (``Service.to_asgi``), in that
process; its answer is compared with onnxruntime's on the same preprocessed input, computed here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
from conftest import REPO, cli_env
from serve_process import SAMPLES, install_model

from faceattr.contract import read_contract
from faceattr.serve.images import load_and_preprocess

#: Run in the fresh interpreter: torch made unimportable, the service imported and asked once; prints one JSON line.
SERVE_WITHOUT_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable by the test)", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
from starlette.testclient import TestClient

from faceattr.serve import service

with TestClient(service.FaceAttr.to_asgi()) as client:
    photo = open(sys.argv[1], "rb").read()
    answer = client.post("/predict", files={"image": ("photo.jpg", photo, "image/jpeg")}, data={"face": "center"})
    with open("/proc/self/maps") as maps:
        libtorch = any("libtorch" in line for line in maps)
    print(json.dumps({"status": answer.status_code, "answer": answer.json(), "torch": "torch" in sys.modules,
                      "libtorch": libtorch, "format": service._served_model()[0].format}))
"""


def test_the_service_answers_with_the_onnx_model_where_torch_cannot_be_imported(tiny_run, tmp_path):
    model_dir = install_model(tiny_run, tmp_path)
    photo = SAMPLES / "grace_hopper.jpg"
    env = {**cli_env(tmp_path), "FACEATTR_SERVE_MODEL": "faceattr", "FACEATTR_SERVE_FORMAT": "auto"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(photo)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, result
    assert result["format"] == "onnx"  # format auto on a CPU: the ONNX artefact
    assert result["torch"] is False and result["libtorch"] is False
    # The same probabilities as onnxruntime on the service's preprocessing of the photo (rounded to 6 decimals).
    metadata = json.loads((model_dir / "faceattr.json").read_text())
    contract = read_contract(metadata, str(model_dir))
    pixels = load_and_preprocess(
        photo.read_bytes(), contract.image_size, contract.crop, jpeg_scaling=contract.jpeg_scaling
    )
    session = ort.InferenceSession(str(model_dir / metadata["formats"]["onnx"]), providers=["CPUExecutionProvider"])
    expected = session.run(None, {contract.input_name: pixels[None].astype(np.float32) / 255})[0][0]
    answered = result["answer"]["attributes"]
    assert list(answered) == list(contract.attributes)
    assert np.abs(np.array(list(answered.values())) - expected).max() <= 1e-5
    assert expected.std() > 1e-3  # attributes differ: a swapped or constant answer would show
