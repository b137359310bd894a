"""The service's HTTP API, end to end: what the endpoints answer (predictions equal to the stored model's on the
shared preprocessing, errors as 4xx with a message), batching, the two runners, the worker layout, start-up without
a model, and `bentoml build`. One real `bentoml serve` subprocess answers every case. Limits and hostile uploads are
in test_serve_limits.py, load and faults in test_serve_faults.py.

Photos: matplotlib's sample photograph of Grace Hopper (a colour portrait, also sent as grayscale, WebP, rotated by
EXIF, and tiled into a wide panorama) and its clip-art gift box (an RGBA PNG without a face); for face detection, a
group photo of three copies of the portrait.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import bentoml
import httpx
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, cli_env
from openapi_spec_validator import validate
from PIL import Image
from serve_process import SAMPLES, install_model, refused_start, service_workers, serving

from faceattr.artefacts import load_torchscript
from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.contract import read_contract
from faceattr.faces import CELEBA_TEMPLATE, FaceDetector
from faceattr.serve.face_finding import FaceFinder, FaceOptions
from faceattr.serve.images import ImageLimits, load_and_preprocess, load_faces

pytestmark = pytest.mark.slow


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    hopper = Image.open(SAMPLES / "grace_hopper.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated by 90 degrees
    return {
        "colour.jpg": (SAMPLES / "grace_hopper.jpg").read_bytes(),
        "grayscale.jpg": encode(hopper.convert("L"), "JPEG", quality=90),
        "no_face.png": (SAMPLES / "Minduka_Present_Blue_Pack.png").read_bytes(),
        "colour.webp": encode(hopper, "WEBP", quality=85),
        "rotated.jpg": encode(hopper.transpose(Image.Transpose.ROTATE_270), "JPEG", exif=exif),
        "panorama.png": encode(Image.fromarray(np.tile(np.asarray(hopper.resize((128, 150))), (1, 5, 1))), "PNG"),
        "group.jpg": encode(_group(hopper), "JPEG", quality=90),
    }


def _group(portrait: Image.Image) -> Image.Image:
    """Three copies of ``portrait``, of different sizes, side by side on one canvas."""
    canvas = Image.new("RGB", (780, 400), (200, 200, 200))
    for i, width in enumerate((250, 200, 160)):
        canvas.paste(portrait.resize((width, round(width * portrait.height / portrait.width))), (i * 260, 20))
    return canvas


@pytest.fixture(scope="module")
def served(shared_server):
    """The service with small limits (serve_process.SHARED_LIMITS: 200 kB per image, 400 kB per request, 4 MP per
    image, 8 images per request), so that the too-large cases are cheap to send; shared with test_serve_limits.py."""
    return shared_server


@pytest.fixture(scope="module")
def reference(served):
    """What the service must answer: the stored TorchScript on the shared preprocessing, and the thresholds."""
    module, embedded = load_torchscript(served["model_dir"] / "model.pt")
    contract = read_contract(json.loads((served["model_dir"] / "faceattr.json").read_text()), "the served model")
    assert read_contract(embedded, "model.pt") == contract

    def probabilities(data: bytes, detector: FaceDetector | None = None) -> np.ndarray:
        """The model's answer for the photo's centre crop, or with ``detector`` for its largest face."""
        size, crop, scaling = contract.image_size, contract.crop, contract.jpeg_scaling
        if detector is None:
            image = load_and_preprocess(data, size, crop, jpeg_scaling=scaling)
        else:
            template = contract.face_template or CELEBA_TEMPLATE
            image = load_faces(data, size, crop, detector=detector, template=template, jpeg_scaling=scaling)[0].pixels
        with torch.no_grad():
            return module(torch.from_numpy(image[None]).float() / 255)[0].numpy()

    return probabilities, np.array([contract.threshold_of()[name] for name in CELEBA_ATTRIBUTES])


def post(served, route: str, files, **kwargs) -> httpx.Response:
    return httpx.post(served["url"] + route, files=files, timeout=60, **kwargs)


def check_prediction(body: dict, expected: np.ndarray, thresholds: np.ndarray) -> None:
    assert list(body["attributes"]) == list(CELEBA_ATTRIBUTES)
    got = np.array(list(body["attributes"].values()))
    assert ((got >= 0) & (got <= 1)).all()
    assert np.abs(got - expected).max() <= 2e-6
    clear = np.abs(expected - thresholds) > 1e-5  # away from a threshold, membership is unambiguous
    present = set(body["present"])
    for name, p, t, sure in zip(CELEBA_ATTRIBUTES, expected, thresholds, clear):
        if sure:
            assert (name in present) == (p >= t), name


def test_health_metrics_swagger_ui_and_a_valid_openapi_3_document(served):
    for route in ("/readyz", "/livez", "/metrics"):
        assert httpx.get(served["url"] + route).status_code == 200, route
    index = httpx.get(served["url"] + "/")
    assert index.status_code == 200 and "swagger-ui" in index.text
    spec = httpx.get(served["url"] + "/docs.json").json()
    validate(spec)  # openapi-spec-validator: valid OpenAPI 3.0
    apis = {path for path, item in spec["paths"].items() if item.get("post")}
    assert apis == {"/predict", "/predict_batch"}  # one route per job
    for path, field in (("/predict", "image"), ("/predict_batch", "images")):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        upload = form["properties"][field]
        upload = upload.get("items", upload)  # /predict_batch: an array of files
        assert (upload["type"], upload["format"]) == ("string", "binary")  # OpenAPI 2's "file" is not 3.0
        assert form["required"] == [field] and set(form["properties"]) - {field} <= {"face", "faces"}


def test_bentoml_clients_call_both_endpoints(served, photos, reference, tmp_path):
    """BentoML's own SyncHTTPClient, which reads the service's /schema.json, sends files and JSON-encoded options."""
    probabilities, thresholds = reference
    photo = tmp_path / "a.jpg"
    photo.write_bytes(photos["colour.jpg"])
    with bentoml.SyncHTTPClient(served["url"]) as client:
        one = client.predict(image=photo)
        batch = client.predict_batch(images=[photo, photo], face="center")
        group = tmp_path / "group.jpg"
        group.write_bytes(photos["group.jpg"])
        faces = client.predict(image=group, face="detect", faces="all")
    check_prediction(one, probabilities(photos["colour.jpg"]), thresholds)
    assert one["model"] == served["tag"] and batch["model"] == served["tag"]
    assert [p["attributes"] for p in batch["predictions"]] == [one["attributes"]] * 2
    assert len(faces["faces"]) == 3


@pytest.mark.parametrize(
    "name", ["colour.jpg", "grayscale.jpg", "no_face.png", "colour.webp", "rotated.jpg", "panorama.png"]
)
def test_predict_answers_photos_with_40_probabilities(served, photos, reference, name):
    probabilities, thresholds = reference
    response = post(served, "/predict", {"image": (name, photos[name])})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == served["tag"]
    check_prediction(body, probabilities(photos[name]), thresholds)


def test_rotation_is_undone_from_exif(served, photos):
    upright = post(served, "/predict", {"image": ("a.jpg", photos["colour.jpg"])}).json()["attributes"]
    rotated = post(served, "/predict", {"image": ("b.jpg", photos["rotated.jpg"])}).json()["attributes"]
    assert max(abs(upright[k] - rotated[k]) for k in upright) < 0.02  # same picture up to JPEG re-encoding


def test_predict_batch_matches_single_predictions(served, photos, reference):
    probabilities, thresholds = reference
    names = ["colour.jpg", "no_face.png", "grayscale.jpg"]
    response = post(served, "/predict_batch", [("images", (n, photos[n])) for n in names])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == served["tag"] and len(body["predictions"]) == 3
    for name, prediction in zip(names, body["predictions"]):
        check_prediction(prediction, probabilities(photos[name]), thresholds)


def _noise_png(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)), "PNG")


def _bad_requests(photos) -> list[tuple[str, dict, int, str]]:
    """(route, httpx.post arguments, status, part of the message) of requests the service must refuse."""
    colour = photos["colour.jpg"]
    small = encode(Image.new("RGB", (10, 10), (90, 60, 40)), "PNG")
    bomb = encode(Image.new("1", (3000, 3000)), "PNG")  # 9 MP of zeros in a few kB
    cases = [
        ("/predict", {"files": {"image": ("notes.txt", b"hello, not an image")}}, 400, "not an image"),
        ("/predict", {"files": {"image": ("empty.jpg", b"")}}, 400, "empty"),
        ("/predict", {"files": {"image": ("cut.jpg", colour[: len(colour) // 2])}}, 400, "truncated or corrupt"),
        (
            "/predict",
            {"files": {"image": ("a.gif", encode(Image.new("RGB", (9, 9)), "GIF"))}},
            400,
            "JPEG, PNG or WEBP",
        ),
        ("/predict", {"files": {"image": ("big.png", _noise_png(300, 300))}}, 413, "limit is 200000 bytes"),
        ("/predict", {"files": {"image": ("bomb.png", bomb)}}, 413, "3000x3000 = 9000000 pixels"),
        ("/predict", {"files": {"image": ("huge.png", b"\0" * 500_000)}}, 413, "max_request_bytes"),
        ("/predict", {"files": {"photo": ("a.jpg", colour)}}, 400, "missing multipart file field 'image'"),
        (
            "/predict",
            {"data": {"image": "http://example.com/a.jpg"}, "files": {"x": ("x", b"x")}},
            400,
            "must be a file upload",
        ),
        ("/predict", {"json": {"image": "a.jpg"}}, 415, "multipart/form-data"),
        ("/predict", {}, 415, "multipart/form-data"),
        ("/predict_batch", {"files": [("images", ("a.jpg", colour)), ("images", ("b.txt", b"text"))]}, 400, "image 1 "),
        (
            "/predict_batch",
            {"files": [("images", (f"{i}.png", small)) for i in range(9)]},
            413,
            "9 images in one request; the limit is 8",
        ),
        ("/predict_batch", {"files": {"image": ("a.jpg", colour)}}, 400, "missing multipart file field 'images'"),
    ]
    return cases


def test_bad_requests_get_4xx_and_the_server_keeps_serving(served, photos):
    colour = photos["colour.jpg"]
    for route, kwargs, status, message in _bad_requests(photos):
        response = httpx.post(served["url"] + route, timeout=60, **kwargs)
        assert response.status_code == status, (route, message, response.status_code, response.text)
        assert message in response.json()["error"], (message, response.text)
    assert post(served, "/predict", {"image": ("a.jpg", colour)}).status_code == 200
    assert httpx.get(served["url"] + "/readyz").status_code == 200
    assert "Traceback" not in served["log"].read_text()


def _metric(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_predict_reads_one_upload_with_text_or_json_options_and_is_counted(served, photos):
    """The upload reader (faceattr/serve/upload_guard.py) in front of /predict: an option as plain text or
    JSON-encoded (as the OpenAPI document's encoding says, and as BentoML's clients send it) is the same option; one
    image per request; an option sent as a file is refused; BentoML's server counts the requests on /metrics."""
    colour = photos["colour.jpg"]
    image = {"image": ("a.jpg", colour)}
    plain = post(served, "/predict", image, data={"face": "detect", "faces": "all"})
    encoded = post(served, "/predict", image, data={"face": '"detect"', "faces": '"all"'})
    assert plain.status_code == 200 and len(plain.json()["faces"]) == 1 and encoded.json() == plain.json()
    cases = [
        ({"files": [("image", ("a.jpg", colour)), ("image", ("b.jpg", colour))]}, "2 files in field 'image'"),
        ({"files": {**image, "face": ("face.txt", b"detect")}}, "the fields face, faces are text values, not files"),
        ({"files": image, "params": {"faces": "all", "face": "detect"}}, "query parameters are not read (face, faces)"),
    ]
    for kwargs, message in cases:
        response = httpx.post(served["url"] + "/predict", timeout=60, **kwargs)
        assert response.status_code == 400 and message in response.json()["error"], (message, response.text)
    metrics = httpx.get(served["url"] + "/metrics").text
    assert re.search(r'^bentoml_service_request_total\{[^}]*endpoint="/predict"', metrics, re.MULTILINE), metrics
    assert "Traceback" not in served["log"].read_text()


def _present_counts(metrics: str) -> dict[str, float]:
    """faceattr_attribute_present_total by attribute, summed over the API workers (BentoML's multiprocess view)."""
    found = re.findall(r'^faceattr_attribute_present_total\{attribute="([^"]+)"\} ([0-9.e+]+)$', metrics, re.MULTILINE)
    counts: dict[str, float] = {}
    for name, value in found:
        counts[name] = counts.get(name, 0.0) + float(value)
    return counts


def test_model_card_landing_page_and_drift_counters_on_the_real_server(served, photos):
    """Through `bentoml serve`'s workers: /model_card answers the store folder's card (404 in one line without one),
    the Swagger UI's document describes this model, and /metrics counts the attributes found present in every
    answered image, summed over the workers, beside the test split's rates of the model's metadata."""
    card = served["model_dir"] / "MODEL_CARD.md"
    exported = card.read_text(encoding="utf-8") if card.is_file() else None
    try:
        card.unlink(missing_ok=True)
        missing = httpx.get(served["url"] + "/model_card")
        assert missing.status_code == 404 and "export it again" in missing.json()["error"]
        card.write_text("# Model card\n\nÜberprüft.\n", encoding="utf-8")
        answer = httpx.get(served["url"] + "/model_card")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/markdown")
        assert answer.content.decode("utf-8") == "# Model card\n\nÜberprüft.\n"
    finally:
        card.unlink(missing_ok=True)
        if exported is not None:
            card.write_text(exported, encoding="utf-8")
    info = httpx.get(served["url"] + "/docs.json").json()["info"]
    assert served["tag"] in info["description"] and "created with BentoML" not in info["description"]

    before = _present_counts(httpx.get(served["url"] + "/metrics").text)
    files = [("images", (name, photos[name])) for name in ("colour.jpg", "grayscale.jpg", "colour.webp")]
    answers = [post(served, "/predict_batch", files).json()["predictions"] for _ in range(4)]  # across the workers
    answers.append([post(served, "/predict", {"image": ("a.jpg", photos["colour.jpg"])}).json()])
    expected: dict[str, float] = {}
    for prediction in (p for batch in answers for p in batch):
        for name in prediction["present"]:
            expected[name] = expected.get(name, 0.0) + 1
    assert expected, "no attribute present in any answer: the counter would be untested"
    after = _present_counts(httpx.get(served["url"] + "/metrics").text)
    assert {name: after[name] - before.get(name, 0.0) for name in after if after[name] != before.get(name)} == expected
    test = json.loads((served["model_dir"] / "faceattr.json").read_text())["metrics"]["test"]
    metrics = httpx.get(served["url"] + "/metrics").text
    for gauge, key in (("positive", "positive_rates"), ("predicted", "predicted_positive_rates")):
        found = re.findall(rf'^faceattr_attribute_test_{gauge}_rate\{{attribute="([^"]+)"\}} (\S+)$', metrics, re.M)
        rates = {name: rate for name, rate in test[key].items() if rate is not None}
        assert rates and {name: float(value) for name, value in found} == pytest.approx(rates), key


def test_face_detect_per_request_answers_about_the_faces_found(served, photos, reference):
    probabilities, thresholds = reference
    metrics = httpx.get(served["url"] + "/metrics").text
    names = (
        "faceattr_face_detection_seconds_count",
        "faceattr_photos_without_face_total",
        "faceattr_faces_found_total",
    )
    before = [_metric(metrics, name) for name in names]

    default = post(served, "/predict", {"image": ("a.jpg", photos["colour.jpg"])}).json()
    assert default["face"] is None  # face=center, the server's default: the centre crop

    response = post(served, "/predict", {"image": ("a.jpg", photos["colour.jpg"])}, data={"face": "detect"})
    assert response.status_code == 200, response.text
    body = response.json()
    face = body["face"]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and face["score"] > 0.9
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 600  # inside the 512x600 portrait
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face["landmarks"])
    check_prediction(body, probabilities(photos["colour.jpg"], FaceDetector()), thresholds)

    response = post(
        served, "/predict", {"image": ("g.jpg", photos["group.jpg"])}, data={"face": "detect", "faces": "all"}
    )
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 3 and set(response.json()) == {"model", "faces"}
    widths = [f["face"]["box"][2] - f["face"]["box"][0] for f in faces]
    assert widths == sorted(widths, reverse=True) and len({round(f["face"]["box"][0]) for f in faces}) == 3
    assert all(list(f["attributes"]) == list(CELEBA_ATTRIBUTES) for f in faces)

    response = post(served, "/predict", {"image": ("gift.png", photos["no_face.png"])}, data={"face": "detect"})
    assert response.status_code == 422 and response.json()["error"].startswith("no face found in the photo")

    response = post(
        served,
        "/predict_batch",
        [("images", ("a.jpg", photos["colour.jpg"])), ("images", ("g.jpg", photos["group.jpg"]))],
        data={"face": "detect"},
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2 and all(p["face"]["score"] > 0.9 for p in predictions)

    metrics = httpx.get(served["url"] + "/metrics").text
    # 5 photos searched (1 + 3 + 0 + 1 + 3 faces found), one without a face.
    assert [_metric(metrics, name) - value for name, value in zip(names, before)] == [5, 1, 8]


def test_bad_face_options_get_400_and_the_server_keeps_serving(served, photos):
    image = {"image": ("a.jpg", photos["colour.jpg"])}
    cases = [
        ({"data": {"face": "sideways"}}, "face='sideways': expected center or detect"),
        ({"data": {"face": "detect", "faces": "some"}}, "faces='some': expected largest or all"),
        ({"data": {"faces": "all"}}, "faces=all needs face=detect"),
        ({"params": {"face": "detect"}}, "query parameters are not read (face)"),
    ]
    for kwargs, message in cases:
        response = httpx.post(served["url"] + "/predict", files=image, timeout=60, **kwargs)
        assert response.status_code == 400 and message in response.json()["error"], (kwargs, response.text)
    response = post(served, "/predict_batch", [("images", ("a.jpg", photos["colour.jpg"]))], data={"face": "3"})
    assert response.status_code == 400 and response.json()["error"] == "face=3: expected center or detect"
    assert post(served, "/predict", image).status_code == 200
    assert "Traceback" not in served["log"].read_text()


def test_no_face_center_answers_from_the_centre_crop():
    """The service's no_face=center policy, on the module it runs (faceattr/serve/face_finding.py), in-process."""
    gift = (SAMPLES / "Minduka_Present_Blue_Pack.png").read_bytes()
    finder = FaceFinder((32, 32), (178, 178), ImageLimits(), no_face="center")
    (prepared,) = finder.prepare(gift, FaceOptions(detect=True))
    assert prepared.face is None
    assert np.array_equal(prepared.pixels, load_and_preprocess(gift, (32, 32), (178, 178)))
    (found,) = finder.prepare((SAMPLES / "grace_hopper.jpg").read_bytes(), FaceOptions(detect=True))
    assert found.face is not None and found.face.score > 0.9


def _batch_histogram(metrics: str) -> tuple[float, float, float]:
    """(calls, images, calls with exactly one image) of faceattr_model_batch_size."""

    def value(pattern: str) -> float:
        match = re.search(pattern + r" ([0-9.e+]+)", metrics)
        return float(match.group(1)) if match else 0.0

    return (
        value(r"faceattr_model_batch_size_count"),
        value(r"faceattr_model_batch_size_sum"),
        value(r'faceattr_model_batch_size_bucket\{le="1.0"\}'),
    )


def test_64_concurrent_requests_meet_in_batches_without_errors(served, photos):
    image = photos["colour.jpg"]
    single = post(served, "/predict", {"image": ("a.jpg", image)}).json()["attributes"]
    before = _batch_histogram(httpx.get(served["url"] + "/metrics").text)

    async def run() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(
            base_url=served["url"], timeout=60, limits=httpx.Limits(max_connections=64)
        ) as client:
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(client.post("/predict", files={"image": (f"{i}.jpg", image)}) for i in range(64))
            )
            return responses, time.perf_counter() - started

    responses, seconds = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 64, {r.status_code: r.text for r in responses}
    for response in responses:
        got = response.json()["attributes"]
        assert max(abs(got[k] - single[k]) for k in single) <= 2e-6
    calls, images, singles = (
        a - b for a, b in zip(_batch_histogram(httpx.get(served["url"] + "/metrics").text), before)
    )
    assert images == 64
    assert singles < calls, "no model call had more than one image: adaptive batching did not batch"
    print(f"\n64 concurrent: {64 / seconds:.1f} img/s, {calls:.0f} model calls, mean batch {images / calls:.1f}")


def test_runner_service_puts_the_model_in_its_own_batching_service(tiny_run, tmp_path, photos, reference):
    """runner=service (the GPU preset's), with a TorchScript-only export (so format auto runs TorchScript):
    FaceAttrModel runs in its own process behind BentoML's adaptive batching; the answers are the same as inline
    (ONNX), and concurrent requests still meet in batches."""
    probabilities, thresholds = reference
    with serving(tiny_run, tmp_path, {"FACEATTR_SERVE_RUNNER": "service"}, ("export=torchscript",)) as server:
        assert "faceattr model faceattr:" in server["log"].read_text()
        assert "(torchscript on cpu)" in server["log"].read_text()
        assert len(service_workers(server, "FaceAttr")) == 1 and len(service_workers(server, "FaceAttrModel")) == 1
        response = post(server, "/predict", {"image": ("a.jpg", photos["colour.jpg"])})
        assert response.status_code == 200, response.text
        check_prediction(response.json(), probabilities(photos["colour.jpg"]), thresholds)

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server["url"], timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/predict", files={"image": (f"{i}.jpg", photos["colour.jpg"])}) for i in range(32))
                )

        before = _batch_histogram(httpx.get(server["url"] + "/metrics").text)
        assert [r.status_code for r in asyncio.run(burst())] == [200] * 32
        calls, images, _ = (a - b for a, b in zip(_batch_histogram(httpx.get(server["url"] + "/metrics").text), before))
        assert images == 32 and calls < 32
        assert "Traceback" not in server["log"].read_text()


def test_inline_runner_has_one_api_worker_per_core_and_no_model_service(served):
    assert len(service_workers(served, "FaceAttr")) == min(len(os.sched_getaffinity(0)), 4)
    assert service_workers(served, "FaceAttrModel") == []
    assert "(onnx on cpu) ready" in served["log"].read_text()  # format auto: the ONNX artefact export wrote


def test_service_refuses_to_start_without_a_model(tmp_path):
    env = {**cli_env(tmp_path), "BENTOML_DO_NOT_TRACK": "True"}
    returncode, lines = refused_start(env)
    assert returncode == 2 and len(lines) == 1, (returncode, lines)
    assert lines[0].startswith("error: no model 'faceattr' in the BentoML model store") and "export.py" in lines[0]


def test_service_refuses_to_start_without_the_artefact_to_run(tiny_run, tmp_path):
    """A TorchScript-only model asked to run ONNX: checked once by `bentoml serve` before any worker starts."""
    model_dir = install_model(tiny_run, tmp_path, ("export=torchscript",))
    env = {**cli_env(tmp_path), "BENTOML_DO_NOT_TRACK": "True", "FACEATTR_SERVE_FORMAT": "onnx"}
    returncode, lines = refused_start(env)
    assert returncode == 2 and len(lines) == 1, (returncode, lines)
    assert lines[0] == (
        f"error: model faceattr:{model_dir.name} has no onnx artefact (it has: torchscript); export it "
        "with `python export.py ckpt=... export=onnx` or set FACEATTR_SERVE_FORMAT to one it has"
    )


def _offline_prefix() -> list[str]:
    """`unshare -n` (no network at all) where this machine allows it, to prove the build needs no download."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


def test_bentoml_build_packages_service_configs_and_model(served):
    proc = subprocess.run(
        [*_offline_prefix(), sys.executable, "-m", "bentoml", "build"],
        cwd=REPO,
        env=served["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "uv is not installed" not in output  # the build would otherwise pip-install uv (a download)
    tag = re.search(r'Successfully built Bento\(tag="(faceattr:[a-z0-9]+)"\)', output).group(1)
    bento = served["tmp"] / "bentoml" / "bentos" / "faceattr" / tag.split(":")[1]
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    models = {m["tag"] for service in info["services"] for m in service["models"]}
    assert models == {served["tag"]}
    for path in (
        "src/faceattr/serve/service.py",
        "src/faceattr/serve/images.py",
        "src/conf/serve/default.yaml",
        "src/conf/serve/onnx.yaml",
        "env/docker/Dockerfile",
    ):
        assert (bento / path).is_file(), path
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().split()
    assert {"torch==2.14.1", "torchvision==0.29.1", "pillow==13.0.0", "bentoml==1.4.40"} <= set(requirements)
    assert not any(r.startswith(("lightning", "timm", "hydra")) for r in requirements)
