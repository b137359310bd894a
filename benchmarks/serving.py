"""Serving: a real ``bentoml serve`` of an exported model under concurrent HTTP load, against the model in-process.

1. A randomly initialized quickstart model (weights do not change the speed) is saved as a Lightning checkpoint and
   exported by the project's export path (``python export.py ckpt=... export=onnx export.quantize=int8``:
   TorchScript, ONNX and int8 ONNX calibrated on the data's validation images, parity checked) into a temporary
   BentoML store (``BENTOML_HOME``); ``benchmarks/served_model.py``. The service serves what ``precision: auto``
   picks on a CPU: the int8 artefact.
2. ``bentoml serve`` starts from the repo root on a free loopback port with the serving config
   (``conf/serve/default.yaml`` + ``FACEATTR_SERVE_*`` overrides given to the benchmark); the benchmark waits for
   ``/readyz``.
3. Clients (``benchmarks/http_load.py``: pre-encoded requests, one keep-alive connection each) POST real
   JPEGs (the generated 178x218 CelebA files) to ``/predict`` at concurrency 1, 8 and 32, each level bounded by a
   request count and a time limit, after a warm-up.
   Figures: img/s (answered images / wall time), client-side latency p50/p99, and the mean batch size the model
   saw (``faceattr_model_batch_size`` sum/count on ``/metrics``, the difference over the level).
4. The ceiling: the artefact the service runs (``format`` and ``precision: auto`` resolved alike), run in this
   process by the service's own ``Predictor`` with every core on uint8 batches of 32 (``max_batch_size``), timed in
   repetitions interleaved with the concurrency-32 load; beside an int8 artefact, the fp32 one's ceiling likewise
   (``fp32/inprocess_b32``: int8 / fp32 in process, paired repetition by repetition).
5. Peak RSS of the serving process tree under load, and at rest after start-up.
6. The plain peer: the same exported model served by a BentoML service written the documented way
   (``benchmarks/plain_bentoml_service.py``: PIL input, torchvision transforms, TorchScript, one batchable API), one
   ``bentoml serve`` per worker count (``Settings.serve_plain_workers``), all running beside ours and loaded by the
   same clients with the same JPEGs: at every level of every repetition ours and each peer run back to back (in
   reverse order every other repetition), so each pair of figures saw the same background load.
7. The fp32 service: faceattr's service on the fp32 artefact (``FACEATTR_SERVE_PRECISION=fp32``), a second
   ``bentoml serve`` beside the first, loaded at concurrency 32 right after it (``fp32/c32``): what int8 changes
   end to end, and the API / model CPU split of the fp32 model.

The load generator runs on the same cores as the server: its CPU time is part of what is measured.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import http_load
from benchmarks.common import Settings, size_pair
from benchmarks.served_model import Server, export_model, random_checkpoint
from benchmarks.timing import PeakRSS, median, percentile

#: The extra load of ``/predict_batch``: (clients, images per request), as many images in flight as concurrency 32.
BATCH_LEVEL = (4, 8)

#: The Prometheus histogram of images per model call of faceattr's service (``faceattr/serve/metrics.py``).
BATCH_METRIC = "faceattr_model_batch_size"

#: The plain peer: its ``bentoml serve`` target, the multipart field of its endpoint, and BentoML's own histogram of
#: requests per call of a batchable endpoint (one image per request here, so images per model call).
PLAIN_SERVICE = "benchmarks.plain_bentoml_service:PlainImageClassifier"
PLAIN_FIELD = "images"
PLAIN_BATCH_METRIC = "bentoml_service_adaptive_batch_size"


def batch_metrics(url: str, metric: str = BATCH_METRIC) -> tuple[float, float]:
    """(sum, count) of the histogram ``metric`` on ``/metrics``."""
    import httpx

    return parse_batch_metrics(httpx.get(f"{url}/metrics", timeout=10).text, metric)


def parse_batch_metrics(text: str, metric: str = BATCH_METRIC) -> tuple[float, float]:
    """(sum, count) of the histogram ``metric`` in a Prometheus text exposition (summed over label sets)."""
    pattern = re.compile(rf"^({re.escape(metric)}_(?:sum|count))(?:\{{[^}}]*\}})?\s+([0-9.eE+-]+)\s*$")
    values = {f"{metric}_sum": 0.0, f"{metric}_count": 0.0}
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            values[match.group(1)] += float(match.group(2))
    return values[f"{metric}_sum"], values[f"{metric}_count"]


def cpu_seconds(server_pid: int | None, stages: bool = True) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process (``client``: the load generator) and of the server's
    process tree (``server``: all of it). With ``stages`` (faceattr's service), the tree split by stage:
    ``model``: the model's compute, i.e. the FaceAttrModel process (runner=service) or the threads named
    ``faceattr-model`` in the API process (runner=inline: the model thread and the thread pool it started, whose
    threads inherit its name); ``api``: the rest of the FaceAttr processes (HTTP, decoding, preprocessing,
    batching); ``other``: the rest of the tree (``bentoml serve``'s supervisor)."""
    import psutil

    from faceattr.serve.batching import MODEL_THREAD

    me = psutil.Process().cpu_times()
    out = {"client": me.user + me.system, "api": 0.0, "model": 0.0, "other": 0.0, "server": 0.0}
    if not stages:
        out = {"client": out["client"], "server": 0.0}
    if server_pid is None:
        return out
    try:
        processes = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]
    except psutil.Error:
        return out
    for process in processes:
        try:
            times = process.cpu_times()
            command = " ".join(process.cmdline())
            threads = process.threads()
        except psutil.Error:
            continue
        total = times.user + times.system
        out["server"] += total
        if not stages:
            continue
        key = "model" if "FaceAttrModel" in command else "api" if "FaceAttr" in command else "other"
        if key == "api":
            model = 0.0
            for thread in threads:
                try:
                    name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
                except OSError:
                    continue
                if name == MODEL_THREAD:
                    model += thread.user_time + thread.system_time
            out["model"] += model
            total -= model
        out[key] += total
    return out


def photos_with_a_face(images: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The JPEGs in which the service's face detector (default settings) finds a face."""
    import io

    from PIL import Image

    from faceattr.faces import FaceDetector

    detector = FaceDetector()
    return [(name, data) for name, data in images if detector(Image.open(io.BytesIO(data)).convert("RGB"))]


def load_level(
    url: str,
    images: list[tuple[str, bytes]],
    concurrency: int,
    requests: int,
    max_seconds: float,
    server_pid: int | None = None,
    per_request: int = 1,
    *,
    field: str | None = None,
    batch_metric: str = BATCH_METRIC,
    stages: bool = True,
    path: str | None = None,
    fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One load level: ``requests`` requests of ``per_request`` images (``/predict``, or ``/predict_batch`` above
    1) from ``concurrency`` clients; img/s, latencies, errors, the mean batch the model saw, CPU per image.
    ``field``, ``batch_metric`` and ``stages`` describe another service than faceattr's (the plain peer): its
    multipart field, its batch-size histogram, and whether its CPU splits into API and model (:func:`cpu_seconds`)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    path = path or ("/predict" if per_request == 1 else "/predict_batch")
    encoded = http_load.encoded_requests(f"{host}:{port}", path, images, per_request, field, fields)
    before, cpu_before = batch_metrics(url, batch_metric), cpu_seconds(server_pid, stages)
    load = http_load.run(http_load.run_load(host, int(port), encoded, concurrency, requests, max_seconds))
    after, cpu_after = batch_metrics(url, batch_metric), cpu_seconds(server_pid, stages)
    outcome: dict[str, Any] = {"latencies": load.latencies, "errors": load.errors, "elapsed": load.elapsed}
    calls = after[1] - before[1]
    answered = len(outcome["latencies"]) * per_request
    outcome["img_s"] = answered / outcome["elapsed"] if outcome["elapsed"] > 0 else float("nan")
    outcome["mean_batch"] = (after[0] - before[0]) / calls if calls else float("nan")
    outcome["cpu_ms_per_image"] = {
        k: (cpu_after[k] - cpu_before[k]) * 1e3 / answered if answered else float("nan") for k in cpu_after
    }
    return outcome


@dataclass
class LevelSamples:
    """The repetitions of one load level, pooled: img/s and mean batch per repetition, every latency, errors."""

    img_s: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    mean_batch: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # summed over the repetitions
    cpu: list[dict[str, float]] = field(default_factory=list)

    def add(self, outcome: dict[str, Any]) -> None:
        self.img_s.append(outcome["img_s"])
        self.latencies.extend(outcome["latencies"])
        self.mean_batch.append(outcome["mean_batch"])
        for key, value in outcome["errors"].items():
            self.errors[key] = self.errors.get(key, 0) + value
        self.cpu.append(outcome["cpu_ms_per_image"])

    def summary(self) -> dict[str, Any]:
        return {
            "img_s": median(self.img_s),
            "p50_ms": round(percentile(self.latencies, 50) * 1e3, 2),
            "p99_ms": round(percentile(self.latencies, 99) * 1e3, 2),
            "mean_batch": round(median(self.mean_batch), 2),
            "requests_ok": len(self.latencies),
            "errors": self.errors,
            "reps": [round(v, 2) for v in self.img_s],
            "cpu_ms_per_image": {
                k: round(median(c[k] for c in self.cpu), 2) for k in (self.cpu[0] if self.cpu else ()) if k != "other"
            },
        }


def ceiling_runner(export_dir: Path, serve_cfg, num_threads: int | None):
    """The service's ``Predictor`` on the exported artefact, in this process: the artefact the service runs with
    ``serve_cfg`` (its ``format``, ``auto`` resolved as the service does, on the CPU)."""
    from faceattr.serve.runtime import Predictor, read_model_info, served_format

    info = read_model_info(export_dir, "bench")
    config = dataclasses.replace(
        serve_cfg, format=served_format(serve_cfg, info, "cpu"), device="cpu", num_threads=num_threads
    )
    return Predictor(info, config), info


class Ceiling:
    """The in-process ceiling: the served artefact on random uint8 batches of ``max_batch_size``, with every core
    (the library default, whatever thread setting the served config chose), warmed up on creation."""

    def __init__(self, export_dir: Path, serve_cfg) -> None:
        self.predictor, info = ceiling_runner(export_dir, serve_cfg, None)
        self.batch = np.random.default_rng(0).integers(
            0, 256, (serve_cfg.max_batch_size, 3, *info.image_size), dtype=np.uint8
        )
        for _ in range(3):
            self.predictor(self.batch)
        self.img_s: list[float] = []
        self.latencies: list[float] = []
        self.cpu_ms_per_image: list[float] = []

    def measure(self, calls: int) -> None:
        """One repetition: ``calls`` timed calls; img/s = batch / their median latency."""
        times = []
        cpu0 = time.process_time()
        for _ in range(calls):
            t0 = time.perf_counter()
            self.predictor(self.batch)
            times.append(time.perf_counter() - t0)
        self.cpu_ms_per_image.append((time.process_time() - cpu0) * 1e3 / (len(times) * len(self.batch)))
        self.latencies.extend(times)
        self.img_s.append(len(self.batch) / percentile(times, 50))

    def summary(self) -> dict[str, Any]:
        return {
            "artefact": self.predictor.artefact,
            "batch": int(len(self.batch)),
            "img_s": median(self.img_s),
            "p50_ms": round(percentile(self.latencies, 50) * 1e3, 2),
            "reps": [round(v, 2) for v in self.img_s],
            "cpu_ms_per_image": round(median(self.cpu_ms_per_image), 2),
        }


def serve_environment(tmp: Path, overrides: dict[str, str]) -> dict[str, str]:
    """The environment of export and ``bentoml serve``: a temporary store, offline, CPU, the given overrides."""
    env = dict(os.environ)
    env.update(
        {
            "BENTOML_HOME": str(tmp / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "HF_HUB_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }
    )
    return env


def export_random_model(cfg, tmp: Path, env: dict[str, str], data_root: Path | None = None) -> tuple[Path, float]:
    """Step 1: the randomly initialized model exported into the temporary store (with ``data_root``, its int8
    artefact too, calibrated on that folder's validation images); (export dir, seconds it took)."""
    started = time.time()
    export_dir = export_model(random_checkpoint(cfg, tmp / "random.ckpt"), tmp, env, data_root)
    return export_dir, time.time() - started


def setup_description(
    cfg, serve_cfg, overrides: dict[str, str], images: list[tuple[str, bytes]], export_s: float
) -> dict[str, Any]:
    """What is served, and how: the head of the result."""
    return {
        "backbone": str(cfg.model.backbone),
        "image_size": "x".join(str(v) for v in size_pair(cfg.data.image_size)),
        "format": serve_cfg.format,
        "runner": serve_cfg.runner,
        "max_batch_size": serve_cfg.max_batch_size,
        "max_latency_ms": serve_cfg.max_latency_ms,
        "num_threads": serve_cfg.num_threads,
        "api_workers": serve_cfg.api_workers,
        "config": serve_cfg.describe(),
        "overrides": overrides,
        "image_bytes_mean": int(np.mean([len(data) for _, data in images])),
        "export_s": round(export_s, 1),
    }


def rss_at_rest(server: Server) -> dict[str, float]:
    """Step 5, at rest: the serving process tree's memory right after start-up."""
    rest = PeakRSS(server.process.pid)
    rest.sample()
    return rest.result()


@dataclass
class Contender:
    """One server under load, with what it takes to load it: faceattr's service (the defaults) or a plain peer
    (``workers``: its worker count; its multipart field, batch-size histogram, and CPU not split by stage); the
    samples of each concurrency level it was loaded at."""

    server: Server
    workers: int | None = None
    upload_field: str | None = None
    batch_metric: str = BATCH_METRIC
    stages: bool = True
    path: str | None = None  # its single-image route (None: /predict)
    fields: dict[str, str] | None = None  # text form fields of each request (e.g. face=detect)
    images: list[tuple[str, bytes]] | None = None  # its own JPEGs (None: the run's)
    startup_s: float = math.nan
    levels: dict[int, LevelSamples] = field(default_factory=dict)

    def load(
        self,
        images: list[tuple[str, bytes]],
        concurrency: int,
        requests: int,
        max_seconds: float,
        per_request: int = 1,
    ) -> dict[str, Any]:
        return load_level(
            self.server.url,
            self.images or images,
            concurrency,
            requests,
            max_seconds,
            self.server.process.pid,
            per_request,
            field=self.upload_field,
            batch_metric=self.batch_metric,
            stages=self.stages,
            path=self.path if per_request == 1 else None,
            fields=self.fields,
        )

    def measure(self, images: list[tuple[str, bytes]], concurrency: int, settings: Settings) -> None:
        """One timed repetition of the level ``concurrency``."""
        outcome = self.load(images, concurrency, settings.serve_requests[concurrency], settings.serve_max_seconds)
        self.levels.setdefault(concurrency, LevelSamples()).add(outcome)

    def warm_up(self, images: list[tuple[str, bytes]], settings: Settings) -> None:
        """Connections, thread pools, batch-size estimates: two requests per client at every concurrency level."""
        for concurrency in settings.serve_requests:
            self.load(images, concurrency, 2 * concurrency, settings.serve_max_seconds)

    def level_summaries(self) -> dict[str, dict[str, Any]]:
        return {f"c{concurrency}": samples.summary() for concurrency, samples in self.levels.items()}


def server_beside(
    env: dict[str, str],
    folder: Path,
    service: str | None = None,
    arguments: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
) -> Server:
    """A second ``bentoml serve`` beside the first, on the same store's models (``service``, ``arguments``: as
    :class:`Server`; ``settings``: extra environment, e.g. ``FACEATTR_SERVE_PRECISION``). It has a BENTOML_HOME of
    its own (under ``folder``) that shares the store's models: ``bentoml serve`` empties
    ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, which would erase the metrics of the servers already
    running."""
    home = folder / "bentoml"
    home.mkdir(parents=True)
    (home / "models").symlink_to(Path(env["BENTOML_HOME"]) / "models", target_is_directory=True)
    return Server({**env, **(settings or {}), "BENTOML_HOME": str(home)}, folder / "serve.log", service, arguments)


def start_plain_peers(env: dict[str, str], tmp: Path, settings: Settings) -> list[Contender]:
    """Step 6: ``bentoml serve`` of the plain peer once per worker count (:func:`server_beside`), one after the
    other (each start-up timed alone), on the model of the store in ``env``. A peer that does not start stops those
    already started."""
    peers: list[Contender] = []
    try:
        for workers in settings.serve_plain_workers:
            server = server_beside(env, tmp / f"plain-workers{workers}", PLAIN_SERVICE, {"workers": str(workers)})
            peers.append(
                Contender(
                    server, workers=workers, upload_field=PLAIN_FIELD, batch_metric=PLAIN_BATCH_METRIC, stages=False
                )
            )
            peers[-1].startup_s = round(server.wait_ready(), 1)
    except BaseException:
        for peer in peers:
            peer.server.stop()
        raise
    return peers


def measure_levels(
    ours: Contender,
    peers: list[Contender],
    images: list[tuple[str, bytes]],
    settings: Settings,
    ceilings: list[Ceiling],
    top_only: tuple[Contender, ...] = (),
) -> LevelSamples:
    """Steps 3, 4 and 6, the timed repetitions: each runs the ``/predict_batch`` level of ours (if asked), then the
    concurrency levels, at each level ours and every peer back to back; the levels and the servers in reverse order
    every other repetition (A B C, C B A, ...), the in-process ceilings (the served artefact's, and the fp32 one's
    beside an int8 model) timed one after the other right before ours at the highest level. ``top_only`` are loaded
    at the highest level only, after ours. Returns the ``/predict_batch`` samples; the levels' samples are in each
    contender."""
    batch_level = LevelSamples()
    clients, per = BATCH_LEVEL
    top = max(settings.serve_requests)
    for rep in range(settings.serve_repetitions):
        forward = rep % 2 == 0
        if settings.serve_batch_level:
            batch_level.add(
                ours.load(images, clients, settings.serve_requests[top] // per, settings.serve_max_seconds, per)
            )
        order = list(settings.serve_requests)
        for concurrency in order if forward else order[::-1]:
            contenders = [ours, *(top_only if concurrency == top else ()), *peers]
            for contender in contenders if forward else contenders[::-1]:
                if contender is ours and concurrency == top:
                    for ceiling in ceilings if forward else ceilings[::-1]:
                        ceiling.measure(settings.ceiling_calls_b32)
                contender.measure(images, concurrency, settings)
    return batch_level


def plain_peer_summary(peers: list[Contender], top: int) -> dict[str, Any]:
    """The peer's figures at each worker count, and the best worker count: the highest median img/s at ``top``."""

    def img_s(peer: Contender) -> float:
        value = median(peer.levels[top].img_s)
        return value if math.isfinite(value) else -math.inf

    best = max(peers, key=img_s)
    return {
        "service": PLAIN_SERVICE,
        "field": PLAIN_FIELD,
        "workers": {str(peer.workers): {"startup_s": peer.startup_s, **peer.level_summaries()} for peer in peers},
        "best_workers": best.workers,
    }


def batch_level_summary(samples: LevelSamples) -> dict[str, Any]:
    clients, per = BATCH_LEVEL
    figures = {k: v for k, v in samples.summary().items() if k not in ("requests_ok", "errors")}
    return {"clients": clients, "images_per_request": per, **figures}


def cpu_bound_ratio_estimate(result: dict[str, Any], top: int) -> float | None:
    """With every process CPU-bound on the same cores, img/s scales as 1 / CPU time per image: the serve/in-process
    ratio the machine allows at best, given the measured per-image CPU of the load generator, the API and the
    model at concurrency ``top``."""
    cpu = result[f"c{top}"]["cpu_ms_per_image"]
    spent = [cpu[stage] for stage in ("client", "api", "model")]
    if not all(math.isfinite(v) for v in spent):
        return None
    return round(result["inprocess_b32"]["cpu_ms_per_image"] / sum(spent), 3)


def summary_line(result: dict[str, Any], settings: Settings) -> str:
    def levels(figures: dict[str, Any]) -> str:
        return ", ".join(
            f"c{c} {figures[f'c{c}']['img_s']:.0f} img/s (p50 {figures[f'c{c}']['p50_ms']:.0f} ms, batch "
            f"{figures[f'c{c}']['mean_batch']:.1f})"
            for c in settings.serve_requests
        )

    line = f"  {result['artefact']}: {levels(result)}; in-process b32 {result['inprocess_b32']['img_s']:.0f} img/s"
    fp32 = result.get("fp32")
    if fp32:
        top = max(settings.serve_requests)
        line += (
            f"\n  onnx (fp32): c{top} {fp32[f'c{top}']['img_s']:.0f} img/s (p50 {fp32[f'c{top}']['p50_ms']:.0f} ms); "
            f"in-process b32 {fp32['inprocess_b32']['img_s']:.0f} img/s"
        )
    plain = result.get("plain_bentoml")
    if plain:
        for workers, figures in plain["workers"].items():
            line += f"\n  plain BentoML service, {workers} worker(s): {levels(figures)}"
    return line


def run(settings: Settings, cfg, data_root: Path, overrides: dict[str, str] | None = None, log=print) -> dict[str, Any]:
    """Steps 1-7 above for the quickstart model of ``cfg``, loaded with the JPEGs of the CelebA folder
    ``data_root`` (whose validation images calibrate the int8 artefact). The service runs what ``precision: auto``
    picks on a CPU, the int8 artefact; beside it a second faceattr server runs the fp32 one (``fp32``: loaded at
    the highest level, with its own in-process ceiling)."""
    from benchmarks.common import serving_images
    from faceattr.layout import INT8_ARTEFACT
    from faceattr.serve.config import load_serve_config

    overrides = dict(overrides or {})
    tmp = Path(tempfile.mkdtemp(prefix="faceattr-bench-serve-"))
    try:
        env = serve_environment(tmp, overrides)
        serve_cfg = load_serve_config(env).for_device("cpu")  # the served API workers and threads
        export_dir, export_s = export_random_model(cfg, tmp, env, data_root)
        images = [(p.name, p.read_bytes()) for p in serving_images(data_root)]
        result = setup_description(cfg, serve_cfg, overrides, images, export_s)
        ceilings = [Ceiling(export_dir, serve_cfg)]
        result["format"] = ceilings[0].predictor.format
        result["artefact"] = ceilings[0].predictor.artefact
        fp32_config = dataclasses.replace(serve_cfg, precision="fp32")
        if result["artefact"] == INT8_ARTEFACT:
            ceilings.append(Ceiling(export_dir, fp32_config))

        ours = Contender(Server(env, tmp / "serve.log"))
        # face=detect (faceattr/faces) on the photos in which the detector finds a face (most generated faces).
        detect_images = photos_with_a_face(images)
        ours_detect = Contender(ours.server, fields={"face": "detect"}, images=detect_images)
        top_only = [ours_detect]
        peers: list[Contender] = []
        try:
            result["startup_s"] = round(ours.server.wait_ready(), 1)
            result["rss_at_rest"] = rss_at_rest(ours.server)
            if len(ceilings) > 1:  # the same service on the fp32 artefact
                fp32 = Contender(server_beside(env, tmp / "fp32", settings={"FACEATTR_SERVE_PRECISION": "fp32"}))
                top_only.append(fp32)
                fp32.startup_s = round(fp32.server.wait_ready(), 1)
            peers = start_plain_peers(env, tmp, settings)
            for contender in (ours, *top_only, *peers):
                contender.warm_up(images, settings)
            with PeakRSS(ours.server.process.pid, interval_s=1.0) as peak:
                batch_level = measure_levels(ours, peers, images, settings, ceilings, tuple(top_only))
            result["rss_under_load"] = peak.result()
        finally:
            for contender in {id(c.server): c for c in (ours, *top_only, *peers)}.values():
                contender.server.stop()
        result["log_tail"] = ours.server.log_tail()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the checkpoint, the export and the store: hundreds of MB

    result.update(ours.level_summaries())
    if len(ceilings) > 1:
        result["fp32"] = {"startup_s": fp32.startup_s, **fp32.level_summaries(), "inprocess_b32": ceilings[1].summary()}
    result["face_detect"] = {"images": len(detect_images), **ours_detect.level_summaries()}
    if batch_level.img_s:
        result["batch_{}x{}".format(*BATCH_LEVEL)] = batch_level_summary(batch_level)
    result["inprocess_b32"] = ceilings[0].summary()
    top = max(settings.serve_requests)
    result["cpu_bound_ratio_estimate"] = cpu_bound_ratio_estimate(result, top)
    if peers:
        result["plain_bentoml"] = plain_peer_summary(peers, top)
    log(summary_line(result, settings))
    return result
