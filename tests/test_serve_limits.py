"""The service's limits and its answers to hostile requests: decompression bombs, the decoding memory budget,
oversized images and bodies, server paths, URLs and pickles sent as input, and loading models only from the store.

The `bentoml serve` that test_serve_api.py uses too (the tiny run's model; conftest.py, ``shared_server``) with small
limits (serve_process.SHARED_LIMITS: 200 kB per image, 400 kB per body, 8 images per request, 4 MP per image, 8 MP
decoded at once), so that the oversized requests and the decompression bombs are cheap to send and to refuse. Load
and faults are in test_serve_faults.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image
from serve_process import SAMPLES, SHARED_LIMITS, assert_still_serving, free_port, refused_start, service_workers

from faceattr.artefacts import load_torchscript
from faceattr.serve.config import ServeConfigError, load_serve_config
from faceattr.serve.runtime import ModelError, read_model_info

pytestmark = pytest.mark.slow

MAX_IMAGE_BYTES = int(SHARED_LIMITS["FACEATTR_SERVE_MAX_IMAGE_BYTES"])
MAX_REQUEST_BYTES = int(SHARED_LIMITS["FACEATTR_SERVE_MAX_REQUEST_BYTES"])
MAX_IMAGES = int(SHARED_LIMITS["FACEATTR_SERVE_MAX_IMAGES_PER_REQUEST"])
MAX_DECODE_PIXELS = int(SHARED_LIMITS["FACEATTR_SERVE_MAX_DECODE_PIXELS"])
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


# --- hostile images ----------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid 1-bit PNG of width x height black pixels: every row stored, zlib-compressed about 1000:1
    (9000x9000 is 10 kB and decodes to 243 MB of RGB)."""
    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def webp_bomb(width: int, height: int) -> bytes:
    """A 38-byte lossless WebP that decodes to width x height pixels: a one-colour 16x16 image, whose entropy code
    spends zero bits per pixel, with the size in its VP8L header raised."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, "WEBP", lossless=True)
    data = bytearray(buffer.getvalue())
    at = data.index(b"VP8L") + 9  # chunk tag, chunk size, signature byte; then 14 bits width-1, 14 bits height-1
    bits = int.from_bytes(data[at : at + 4], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[at : at + 4] = bits.to_bytes(4, "little")
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) declares width x height."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_bombs_are_real():
    """What the service refuses would really blow up: Pillow alone opens them and decodes them at full size."""
    webp = webp_bomb(3000, 2000)
    assert len(webp) < 64
    with Image.open(io.BytesIO(webp)) as image:
        assert image.size == (3000, 2000)
        image.load()
        assert image.getpixel((2999, 1999))[:3] == (200, 100, 50)
    png = png_bomb(3000, 3000)
    assert len(png) < 5000
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.size == (3000, 3000)
    with Image.open(io.BytesIO(jpeg_declaring(8000, 8000))) as image:
        assert image.size == (8000, 8000)


def test_decompression_bombs_are_refused_from_their_header(server):
    cases = {
        "png 9000x9000 (10 kB, 243 MB decoded)": ("b.png", png_bomb(9000, 9000), "9000x9000 = 81000000 pixels"),
        "png 20000x20000 (beyond Pillow's own guard)": ("c.png", png_bomb(20000, 20000), "too many pixels"),
        "webp 9000x9000 (38 bytes)": ("d.webp", webp_bomb(9000, 9000), "9000x9000 = 81000000 pixels"),
        "webp 2001x2000 (just over the limit)": ("e.webp", webp_bomb(2001, 2000), "2001x2000 = 4002000 pixels"),
        "jpeg declaring 8000x8000": ("f.jpg", jpeg_declaring(8000, 8000), "8000x8000 = 64000000 pixels"),
    }
    for label, (name, data, message) in cases.items():
        started = time.perf_counter()
        response = httpx.post(server["url"] + "/predict", files={"image": (name, data)}, timeout=60)
        seconds = time.perf_counter() - started
        assert response.status_code == 413, (label, response.status_code, response.text)
        assert message in response.json()["error"], (label, response.text)
        assert seconds < 5, (label, seconds)  # refused from the header, not after decoding
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    files = [("images", ("a.jpg", photo)), ("images", ("b.webp", webp_bomb(9000, 9000)))]
    response = httpx.post(server["url"] + "/predict_batch", files=files, timeout=60)
    assert response.status_code == 413 and response.json()["error"].startswith("image 1 "), response.text
    assert_still_serving(server)


def test_decoding_budget_setting_is_checked():
    default = load_serve_config({}).decoding_limits()
    assert default.budget.capacity == 50_000_000 == default.max_pixels and default.budget.timeout_s == 30
    limits = load_serve_config({"FACEATTR_SERVE_MAX_DECODE_PIXELS": "90000000"}).decoding_limits()
    assert limits.budget.capacity == 90_000_000 and limits.max_pixels == 50_000_000
    assert load_serve_config({}).limits.budget is None  # export and the checks use no budget
    with pytest.raises(ServeConfigError, match="max_decode_pixels=1000 .*must be at least max_image_pixels"):
        load_serve_config({"FACEATTR_SERVE_MAX_DECODE_PIXELS": "1000"})


def _peak_rss_mib(process: psutil.Process) -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of ``process`` in MiB, from /proc."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


def test_concurrent_bombs_under_the_limit_decode_within_the_memory_budget(server):
    """16 concurrent 38-byte WebPs of 4 MP each (under max_image_pixels, so they are decoded): the decoding budget
    (max_decode_pixels = 2 such images) keeps the API process's peak memory near 2 decodes, not 16 (measured: about
    +205 MiB with the budget, +1066 MiB without)."""
    process = service_workers(server)[0]  # one API worker: the one whose memory is measured
    bomb = webp_bomb(2000, 1999)
    single = 2000 * 1999 * 22 / MIB  # about 22 bytes per decoded WebP pixel at the peak
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before, _ = _peak_rss_mib(process)

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server["url"], timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/predict", files={"image": (f"{i}.webp", bomb)}) for i in range(16))
            )

    responses = asyncio.run(send())
    assert [r.status_code for r in responses] == [200] * 16, {r.status_code: r.text for r in responses}
    _, peak = _peak_rss_mib(process)
    print(
        f"\n16 concurrent 4 MP WebP bombs: API RSS {before:.0f} MiB, peak +{peak - before:.0f} MiB "
        f"(one decode about {single:.0f} MiB, budget {MAX_DECODE_PIXELS / 1e6:.0f} MP)"
    )
    assert peak - before < 2 * single + 150, f"peak +{peak - before:.0f} MiB: more than 2 decodes at once"


def test_oversized_images_and_bodies_get_413(server):
    url = server["url"]
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    # A valid JPEG (trailing bytes are ignored) one byte over max_image_bytes.
    padded = photo + b"\0" * (MAX_IMAGE_BYTES + 1 - len(photo))
    response = httpx.post(url + "/predict", files={"image": ("big.jpg", padded)}, timeout=60)
    assert response.status_code == 413, response.text
    assert f"{MAX_IMAGE_BYTES + 1} bytes; the limit is {MAX_IMAGE_BYTES} bytes" in response.json()["error"]

    # Over max_request_bytes: announced by Content-Length, and streamed without one (chunked).
    many = [("images", (f"{i}.jpg", padded[: MAX_REQUEST_BYTES // 3])) for i in range(4)]
    response = httpx.post(url + "/predict_batch", files=many, timeout=60)
    assert response.status_code == 413 and "max_request_bytes" in response.json()["error"], response.text
    boundary = "reliability-boundary"

    def chunked_body(size: int):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        chunk = b"\0" * (64 * 1024)
        for _ in range(size // len(chunk)):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        url + "/predict",
        content=chunked_body(2 * MAX_REQUEST_BYTES),
        timeout=60,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413 and "max_request_bytes" in response.json()["error"], response.text

    # More images than max_images_per_request.
    small = io.BytesIO()
    Image.new("RGB", (8, 8)).save(small, "PNG")
    files = [("images", (f"{i}.png", small.getvalue())) for i in range(MAX_IMAGES + 1)]
    response = httpx.post(url + "/predict_batch", files=files, timeout=60)
    assert response.status_code == 413 and f"the limit is {MAX_IMAGES}" in response.json()["error"], response.text
    assert_still_serving(server)


# --- no server paths, no URLs, no pickles --------------------------------------------------------------------------


class _CountingHandler(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write((SAMPLES / "grace_hopper.jpg").read_bytes())

    def log_message(self, *args):
        pass


class _Evil:
    """Unpickling this touches ``marker``: what a pickle-accepting endpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_endpoint_reads_a_server_path_fetches_a_url_or_unpickles(server, tmp_path):
    url = server["url"]
    secret = tmp_path / "secret.jpg"  # a real image on the server's disk: reading it would answer 200
    secret.write_bytes((SAMPLES / "grace_hopper.jpg").read_bytes())
    web = ThreadingHTTPServer(("127.0.0.1", free_port()), _CountingHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    image_url = f"http://127.0.0.1:{web.server_address[1]}/photo.jpg"
    marker = tmp_path / "unpickled"
    try:
        cases = [
            ("json path", "/predict", {"json": {"image": str(secret)}}, 415),
            ("json paths", "/predict_batch", {"json": {"images": [str(secret)]}}, 415),
            ("form-urlencoded path", "/predict", {"data": {"image": str(secret)}}, 415),
            ("multipart text path", "/predict", {"data": {"image": str(secret)}, "files": {"x": ("x", b"x")}}, 400),
            (
                "multipart file:// URL",
                "/predict",
                {"data": {"image": f"file://{secret}"}, "files": {"x": ("x", b"x")}},
                400,
            ),
            ("multipart http URL", "/predict", {"data": {"image": image_url}, "files": {"x": ("x", b"x")}}, 400),
            (
                "multipart batch path",
                "/predict_batch",
                {"data": {"images": str(secret)}, "files": {"x": ("x", b"x")}},
                400,
            ),
            (
                "pickle body",
                "/predict",
                {
                    "content": pickle.dumps({"image": _Evil(marker)}),
                    "headers": {"content-type": "application/vnd.bentoml+pickle"},
                },
                415,
            ),
        ]
        for label, route, kwargs, status in cases:
            response = httpx.post(url + route, timeout=60, **kwargs)
            assert response.status_code == status, (label, response.status_code, response.text)
            assert "attributes" not in response.text and "error" in response.json(), (label, response.text)
        assert _CountingHandler.hits == 0, "the service fetched a URL it was sent"
        assert not marker.exists(), "the service unpickled a request body"
    finally:
        web.shutdown()
        web.server_close()

    # A client file name is never a path on the server: the upload is read into memory, never written under it.
    target = tmp_path / "written.jpg"
    traversal = "../" * 12 + str(target).lstrip("/")
    response = httpx.post(url + "/predict", files={"image": (traversal, secret.read_bytes())}, timeout=60)
    assert response.status_code == 200, response.text
    assert not target.exists()
    for route in (
        "/static_content/../../../../etc/passwd",
        "/static_content/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/docs.json/..%2f..%2fetc%2fpasswd",
        "/..%2f..%2fetc%2fpasswd",
    ):
        response = httpx.get(url + route, timeout=60)
        assert response.status_code == 404 and "root:" not in response.text, (route, response.status_code)
    assert_still_serving(server)


# --- safe loading --------------------------------------------------------------------------------------------------


def test_service_loads_models_only_from_the_store(server, tmp_path):
    model_pt = server["model_dir"] / "model.pt"
    env = {**server["env"], "FACEATTR_SERVE_MODEL": str(model_pt)}
    returncode, lines = refused_start(env)
    assert returncode == 2 and len(lines) == 1, (returncode, lines)
    assert lines[0].startswith(
        f"error: FACEATTR_SERVE_MODEL='{model_pt}' is a path: the service loads models only "
        "from the BentoML model store"
    ), lines

    # An artefact named in the stored metadata must be a file of the model's own folder.
    stored = read_model_info(server["model_dir"], "faceattr:x")
    info = dataclasses.replace(stored, formats={"torchscript": "../" * 8 + str(model_pt).lstrip("/")})
    with pytest.raises(ModelError, match="not a file of the model's own folder"):
        info.artefact("torchscript")
    info = dataclasses.replace(info, formats={"torchscript": "model.pt"})
    assert info.artefact("torchscript") == model_pt


def test_torchscript_artefacts_are_loaded_without_running_pickled_code(server, tmp_path):
    """A TorchScript archive whose pickles were replaced by one that runs a command: torch.jit.load's restricted
    unpickler refuses it, and the command does not run (it does with a plain unpickler)."""
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Evil(marker), protocol=2)
    proc = subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.loads({payload!r})"], capture_output=True, timeout=60
    )
    assert proc.returncode == 0 and marker.exists(), "the payload does not run code: the test proves nothing"
    marker.unlink()
    source = zipfile.ZipFile(server["model_dir"] / "model.pt")
    for target in ("data.pkl", "constants.pkl"):
        evil = tmp_path / f"evil_{target}.pt"
        with zipfile.ZipFile(evil, "w") as archive:
            for name in source.namelist():
                archive.writestr(name, payload if name.endswith("/" + target) else source.read(name))
        # torch.jit.load's unpickler knows TorchScript's own types only: it refuses the payload's callable by name.
        with pytest.raises(RuntimeError, match=r"Unknown type name 'posix\.system'"):
            load_torchscript(evil)
        assert not marker.exists(), f"loading a TorchScript archive ran the code in its {target}"
    module, meta = load_torchscript(server["model_dir"] / "model.pt")  # the genuine one still loads
    assert meta["contract"]["image_size"] == [32, 32] and json.loads(json.dumps(meta))
