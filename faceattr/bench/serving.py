"""Serving: a real ``bentoml serve`` of an exported model under concurrent HTTP load, against the model in-process.

1. A randomly initialized quickstart model (weights do not change the speed) is saved as a Lightning checkpoint and
   exported by the project's export path (``python export.py ckpt=... export=onnx``: TorchScript and ONNX, parity
   checked) into a temporary BentoML store (``BENTOML_HOME``).
2. ``bentoml serve`` starts from the repo root on a free loopback port with the serving config
   (``conf/serve/default.yaml`` + ``FACEATTR_SERVE_*`` overrides given to the benchmark); the benchmark waits for
   ``/readyz``.
3. Clients (``faceattr/bench/http_load.py``: pre-encoded requests, one keep-alive connection each) POST real
   JPEGs (the generated 178x218 CelebA files) to ``/predict`` at concurrency 1, 8 and 32, each level bounded by a
   request count and a time limit, after a warm-up.
   Figures: img/s (answered images / wall time), client-side latency p50/p99, and the mean batch size the model
   saw (``faceattr_model_batch_size`` sum/count on ``/metrics``, the difference over the level).
4. The ceiling: the artefact the service runs (``format: auto`` resolved alike), run in this process by the
   service's own ``Predictor`` with every core on uint8 batches of 32 (``max_batch_size``), timed in repetitions
   interleaved with the concurrency-32 load.
5. Peak RSS of the serving process tree under load, and at rest after start-up.

The load generator runs on the same cores as the server: its CPU time is part of what is measured.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.bench import http_load
from faceattr.bench.common import REPO, Settings, size_pair
from faceattr.bench.http_load import multipart_request, run_load
from faceattr.bench.timing import PeakRSS, latency_summary, median, percentile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_checkpoint(cfg, path: Path) -> Path:
    """A Lightning checkpoint of a randomly initialized quickstart model (what export needs, nothing else)."""
    import lightning as L
    import torch

    from faceattr.attributes import CELEBA_ATTRIBUTES
    from faceattr.model import FaceAttrModule

    torch.manual_seed(0)
    module = FaceAttrModule(str(cfg.model.backbone), CELEBA_ATTRIBUTES, cfg.data.image_size, crop=cfg.data.crop)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__, "epoch": 0, "global_step": 0}, path)
    return path


def export_model(checkpoint: Path, tmp: Path, env: dict[str, str]) -> Path:
    """``python export.py ckpt=<checkpoint> export=onnx`` into ``tmp/export`` and the store; returns the export dir."""
    out = tmp / "export"
    proc = subprocess.run(
        [sys.executable, str(REPO / "export.py"), f"ckpt={checkpoint}", "export=onnx", f"output_dir={out}",
         "calibration.num_workers=0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return out


class Server:
    """``bentoml serve`` in its own process group on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        import httpx

        started = time.time()
        while True:
            if self.process.poll() is not None:
                log = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"bentoml serve exited {self.process.returncode}:\n{log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.time() - started
            except httpx.HTTPError:
                pass
            if time.time() - started > timeout_s:
                raise RuntimeError(f"bentoml serve not ready in {timeout_s:.0f}s:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self.log.close()


#: The extra load of ``/predict_batch``: (clients, images per request), as many images in flight as concurrency 32.
BATCH_LEVEL = (4, 8)

METRIC = re.compile(r"^(faceattr_model_batch_size_(?:sum|count))(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$")


def batch_metrics(url: str) -> tuple[float, float]:
    """(sum, count) of the ``faceattr_model_batch_size`` histogram on ``/metrics``."""
    import httpx

    return parse_batch_metrics(httpx.get(f"{url}/metrics", timeout=10).text)


def parse_batch_metrics(text: str) -> tuple[float, float]:
    """(sum, count) of ``faceattr_model_batch_size`` in a Prometheus text exposition (summed over label sets)."""
    values = {"faceattr_model_batch_size_sum": 0.0, "faceattr_model_batch_size_count": 0.0}
    for line in text.splitlines():
        match = METRIC.match(line)
        if match:
            values[match.group(1)] += float(match.group(2))
    return values["faceattr_model_batch_size_sum"], values["faceattr_model_batch_size_count"]


def encoded_requests(url: str, images: list[bytes], per_request: int = 1) -> list[bytes]:
    """One pre-encoded HTTP request per image (``/predict``, field ``image``), or per ``per_request`` consecutive
    images (``/predict_batch``, field ``images`` repeated)."""
    host = url.split("://", 1)[1]
    if per_request == 1:
        return [multipart_request(host, "/predict", [("image", "face.jpg", data, "image/jpeg")]) for data in images]
    return [
        multipart_request(host, "/predict_batch", [
            ("images", f"{k}.jpg", images[(start + k) % len(images)], "image/jpeg") for k in range(per_request)])
        for start in range(0, len(images), per_request)
    ]


def cpu_seconds(server_pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process (the load generator) and of the server's processes:
    ``model``: the model's compute, i.e. the FaceAttrModel process (runner=service) or the threads named
    ``faceattr-model`` in the API process (runner=inline: the model thread and the OpenMP team it started);
    ``api``: the rest of the FaceAttr processes (HTTP, decoding, preprocessing, batching)."""
    import psutil

    from faceattr.serve.batching import MODEL_THREAD

    me = psutil.Process().cpu_times()
    out = {"client": me.user + me.system, "api": 0.0, "model": 0.0, "other": 0.0}
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
        key = "model" if "FaceAttrModel" in command else "api" if "FaceAttr" in command else "other"
        total = times.user + times.system
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


def load_level(url: str, images: list[bytes], concurrency: int, requests: int, max_seconds: float,
               server_pid: int | None = None, per_request: int = 1) -> dict[str, Any]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    encoded = encoded_requests(url, images, per_request)
    before, cpu_before = batch_metrics(url), cpu_seconds(server_pid)
    load = http_load.run(run_load(host, int(port), encoded, concurrency, requests, max_seconds))
    after, cpu_after = batch_metrics(url), cpu_seconds(server_pid)
    outcome: dict[str, Any] = {"latencies": load.latencies, "errors": load.errors, "elapsed": load.elapsed}
    calls = after[1] - before[1]
    answered = len(outcome["latencies"]) * per_request
    outcome["img_s"] = answered / outcome["elapsed"] if outcome["elapsed"] > 0 else float("nan")
    outcome["mean_batch"] = (after[0] - before[0]) / calls if calls else float("nan")
    outcome["cpu_ms_per_image"] = {k: (cpu_after[k] - cpu_before[k]) * 1e3 / answered if answered else float("nan")
                                   for k in cpu_after}
    return outcome


def ceiling_runner(export_dir: Path, serve_cfg, num_threads: int | None):
    """The service's ``Predictor`` on the exported artefact, in this process: the artefact the service runs with
    ``serve_cfg`` (its ``format``, ``auto`` resolved as the service does, on the CPU)."""
    import dataclasses

    from faceattr.serve.runtime import ModelInfo, Predictor, served_format

    meta = json.loads((export_dir / "faceattr.json").read_text())
    info = ModelInfo(
        tag="bench", path=export_dir, attributes=tuple(meta["attributes"]),
        image_size=tuple(meta["image_size"]), crop=tuple(meta["crop"]) if meta.get("crop") else None,
        thresholds=tuple(meta["thresholds"].values()), formats=dict(meta["formats"]), metadata=meta,
    )
    config = dataclasses.replace(serve_cfg, format=served_format(serve_cfg, info, "cpu"), device="cpu",
                                 num_threads=num_threads)
    return Predictor(info, config), info


def run(settings: Settings, cfg, image_paths: list[Path], overrides: dict[str, str] | None = None,
        log=print) -> dict[str, Any]:
    from faceattr.serve.config import load_serve_config

    overrides = dict(overrides or {})
    tmp = Path(tempfile.mkdtemp(prefix="faceattr-bench-serve-"))
    env = dict(os.environ)
    env.update({"BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1",
                "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", **overrides})
    serve_cfg = load_serve_config(env).for_device("cpu")  # the served API workers and threads
    started = time.time()
    checkpoint = random_checkpoint(cfg, tmp / "random.ckpt")
    export_dir = export_model(checkpoint, tmp, env)
    export_s = time.time() - started
    images = [Path(p).read_bytes() for p in image_paths]
    result: dict[str, Any] = {
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
        "image_bytes_mean": int(np.mean([len(b) for b in images])),
        "export_s": round(export_s, 1),
    }
    # The ceiling uses every core (the library default), whatever thread setting the served config chose.
    predictor, info = ceiling_runner(export_dir, serve_cfg, None)
    result["format"] = predictor.format
    batch = np.random.default_rng(0).integers(0, 256, (serve_cfg.max_batch_size, 3, *info.image_size), dtype=np.uint8)
    for _ in range(3):
        predictor(batch)

    server = Server(env, tmp / "serve.log")
    levels: dict[int, dict[str, list]] = {
        c: {"img_s": [], "latencies": [], "mean_batch": [], "errors": [], "cpu": []} for c in settings.serve_requests
    }
    ceiling: list[float] = []
    ceiling_latencies: list[float] = []
    ceiling_cpu: list[float] = []
    try:
        result["startup_s"] = round(server.wait_ready(), 1)
        rest = PeakRSS(server.process.pid)
        rest.sample()
        result["rss_at_rest"] = rest.result()
        for concurrency in settings.serve_requests:  # warm-up: connections, thread pools, batch-size estimates
            load_level(server.url, images, concurrency, 2 * concurrency, settings.serve_max_seconds)
        batch_level: dict[str, list] = {"img_s": [], "latencies": [], "mean_batch": [], "cpu": []}
        clients, per = BATCH_LEVEL
        with PeakRSS(server.process.pid, interval_s=1.0) as peak:
            for rep in range(settings.serve_repetitions):
                if settings.serve_batch_level:
                    requests = settings.serve_requests[max(settings.serve_requests)] // per
                    outcome = load_level(server.url, images, clients, requests, settings.serve_max_seconds,
                                         server.process.pid, per_request=per)
                    batch_level["img_s"].append(outcome["img_s"])
                    batch_level["latencies"].extend(outcome["latencies"])
                    batch_level["mean_batch"].append(outcome["mean_batch"])
                    batch_level["cpu"].append(outcome["cpu_ms_per_image"])
                order = list(settings.serve_requests)
                order = order if rep % 2 == 0 else order[::-1]
                for concurrency in order:
                    if concurrency == max(settings.serve_requests):
                        times = []
                        cpu0 = time.process_time()
                        for _ in range(settings.ceiling_calls_b32):
                            t0 = time.perf_counter()
                            predictor(batch)
                            times.append(time.perf_counter() - t0)
                        ceiling_cpu.append((time.process_time() - cpu0) * 1e3 / (len(times) * len(batch)))
                        ceiling_latencies.extend(times)
                        ceiling.append(len(batch) / percentile(times, 50))
                    outcome = load_level(server.url, images, concurrency, settings.serve_requests[concurrency],
                                         settings.serve_max_seconds, server.process.pid)
                    entry = levels[concurrency]
                    entry["img_s"].append(outcome["img_s"])
                    entry["latencies"].extend(outcome["latencies"])
                    entry["mean_batch"].append(outcome["mean_batch"])
                    entry["errors"].append(outcome["errors"])
                    entry["cpu"].append(outcome["cpu_ms_per_image"])
        result["rss_under_load"] = peak.result()
    finally:
        server.stop()
    result["log_tail"] = server.log_path.read_text()[-1500:] if server.log_path.exists() else ""
    for concurrency, entry in levels.items():
        summary = latency_summary(entry["latencies"])
        errors: dict[str, int] = {}
        for item in entry["errors"]:
            for key, value in item.items():
                errors[key] = errors.get(key, 0) + value
        result[f"c{concurrency}"] = {
            "img_s": median(entry["img_s"]),
            "p50_ms": round(summary["p50_ms"], 2),
            "p99_ms": round(summary["p99_ms"], 2),
            "mean_batch": round(median(entry["mean_batch"]), 2),
            "requests_ok": len(entry["latencies"]),
            "errors": errors,
            "reps": [round(v, 2) for v in entry["img_s"]],
            "cpu_ms_per_image": {k: round(median(c[k] for c in entry["cpu"]), 2) for k in ("client", "api", "model")},
        }
    if batch_level["img_s"]:
        result[f"batch_{clients}x{per}"] = {
            "clients": clients,
            "images_per_request": per,
            "img_s": median(batch_level["img_s"]),
            "p50_ms": round(percentile(batch_level["latencies"], 50) * 1e3, 2),
            "p99_ms": round(percentile(batch_level["latencies"], 99) * 1e3, 2),
            "mean_batch": round(median(batch_level["mean_batch"]), 2),
            "reps": [round(v, 2) for v in batch_level["img_s"]],
            "cpu_ms_per_image": {k: round(median(c[k] for c in batch_level["cpu"]), 2)
                                 for k in ("client", "api", "model")},
        }
    result["inprocess_b32"] = {
        "batch": int(len(batch)),
        "img_s": median(ceiling),
        "p50_ms": round(percentile(ceiling_latencies, 50) * 1e3, 2),
        "reps": [round(v, 2) for v in ceiling],
        "cpu_ms_per_image": round(median(ceiling_cpu), 2),
    }
    top = f"c{max(settings.serve_requests)}"
    spent = result[top]["cpu_ms_per_image"]
    # With every process CPU-bound on the same cores, img/s scales as 1 / CPU time per image: this is the ratio
    # the machine allows at best, given the measured per-image CPU of the load generator, the API and the model.
    result["cpu_bound_ratio_estimate"] = round(
        result["inprocess_b32"]["cpu_ms_per_image"] / sum(spent.values()), 3) if all(
        math.isfinite(v) for v in spent.values()) else None
    log(f"  {result['format']}: " + ", ".join(
        f"c{c} {result[f'c{c}']['img_s']:.0f} img/s (p50 {result[f'c{c}']['p50_ms']:.0f} ms, batch "
        f"{result[f'c{c}']['mean_batch']:.1f})" for c in settings.serve_requests)
        + f"; in-process b32 {result['inprocess_b32']['img_s']:.0f} img/s")
    return result
