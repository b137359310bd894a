"""Sizing a deployment: for each model and precision, what one core serves and what one replica holds in memory,
and from that the rule "for R requests/s you need N cores and M GiB" and the Kubernetes resources of docs/serving.md.

For each model of ``Settings.sizing_models`` (the quickstart model; resnet18 and resnet50 at 128x128), a randomly
initialized checkpoint (weights do not change the speed) is exported by the project's export with its int8 artefact
(``benchmarks/served_model.py``), and faceattr's service runs it twice side by side, with the default settings
(``api_workers`` = one per core) and ``FACEATTR_SERVE_PRECISION=fp32`` or ``int8``. Each is loaded with the
generated CelebA JPEGs, one per request, at 1 and at 32 concurrent clients (``benchmarks/http_load.py``), the two
servers and the two levels in alternating order over the repetitions. Figures per model x precision:

* served img/s at 32 clients on this machine, and **img/s per core**: 1000 / the server process tree's CPU ms per
  image at 32 clients (every process of the tree: API workers, model threads, ``bentoml serve``). The load generator
  runs on the same cores; counting the server's own CPU gives what a core of a replica serves at saturation, without
  the client's share;
* client-side latency p50 / p99 at 1 and at 32 clients;
* RSS of each API worker (the largest) and of ``bentoml serve`` after the load, and their sum for one replica.

The rule sizes at :data:`TARGET_UTILIZATION` of the cores (headroom for bursts and for the p99): for R requests/s,
N = ceil(R / (utilization x img/s per core)) cores, in replicas of :data:`REPLICA_CORES` cores (one API worker per
core), each holding the replica's RSS; M = replicas x that. :func:`kubernetes_resources` turns the default model's
row into a replica's requests and limits (the limit with room for the largest uploads' decoding), which
docs/serving.md's manifest carries (tests/test_deploy.py checks that they agree with BENCHMARKS.md).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Settings, quickstart_config, serving_images, size_pair
from benchmarks.serve_memory import role
from benchmarks.serving import Contender, LevelSamples, export_random_model, serve_environment, server_beside

#: The precisions of each model's two servers (the serve setting ``precision``).
PRECISIONS = ("fp32", "int8")
#: Cores of one replica (its API workers: one per core), as docs/serving.md's manifest deploys it.
REPLICA_CORES = 2
#: The share of a replica's cores the rule plans to keep busy at the target rate.
TARGET_UTILIZATION = 0.7
#: The model and precision of docs/serving.md's manifest: the quickstart model, int8 (what `precision: auto` serves
#: on a CPU).
MANIFEST_ROW = "quickstart/int8"
#: Memory of the manifest: the request is the replica's measured RSS with this headroom; the limit adds to that what
#: the largest uploads may take while they decode, in every API worker at once (the service's decoding budget,
#: ``max_decode_pixels`` x the peak bytes per decoded pixel: about 1.1 GB per worker by default), so that a large
#: photo is answered instead of the replica being killed for memory.
MEMORY_REQUEST_HEADROOM = 1.25
MIB_STEP = 64


def rss_by_role(server_pid: int) -> dict[str, float]:
    """MB of RSS now: ``worker`` (the largest API worker), ``workers`` (their count), ``serve`` (``bentoml serve``)
    and ``replica`` (the whole process tree)."""
    import psutil

    root = psutil.Process(server_pid)
    workers, serve, total = [], 0.0, 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            rss = process.memory_info().rss / 2**20
            name = role(process, server_pid)
        except psutil.Error:
            continue
        total += rss
        if name == "bentoml serve":
            serve = rss
        elif name.startswith("worker"):
            workers.append(rss)
    return {
        "worker": round(max(workers, default=math.nan), 1),
        "workers": len(workers),
        "serve": round(serve, 1),
        "replica": round(total, 1),
    }


def row(samples: dict[int, LevelSamples], rss: dict[str, float], cores: int) -> dict[str, Any]:
    """One model x precision: the figures of the docstring."""
    c1, c32 = samples[1].summary(), samples[32].summary()
    server_ms = c32["cpu_ms_per_image"].get("server", math.nan)
    return {
        "img_s_c32": round(c32["img_s"], 1),
        "img_s_per_core": round(1e3 / server_ms, 1) if server_ms and math.isfinite(server_ms) else math.nan,
        "server_cpu_ms_per_image": server_ms,
        "cores": cores,
        "c1_p50_ms": c1["p50_ms"],
        "c1_p99_ms": c1["p99_ms"],
        "c32_p50_ms": c32["p50_ms"],
        "c32_p99_ms": c32["p99_ms"],
        "errors": {**c1["errors"], **{f"c32 {k}": v for k, v in c32["errors"].items()}},
        "rss_mb": rss,
        "reps_c32": c32["reps"],
    }


def needed(entry: dict[str, Any], requests_per_s: float) -> dict[str, Any]:
    """The rule for one row: cores, replicas and GiB for ``requests_per_s`` (one image per request)."""
    cores = math.ceil(requests_per_s / (TARGET_UTILIZATION * entry["img_s_per_core"]))
    replicas = math.ceil(cores / REPLICA_CORES)
    return {
        "requests_per_s": requests_per_s,
        "cores": replicas * REPLICA_CORES,
        "replicas": replicas,
        "gib": round(replicas * entry["rss_mb"]["replica"] / 1024, 1),
    }


def _mib(mb: float, headroom: float) -> str:
    return f"{math.ceil(mb * headroom / MIB_STEP) * MIB_STEP}Mi"


def decode_budget_mb() -> float:
    """MB the decoding of uploads may take at once in one API worker with the default settings."""
    from faceattr.serve.config import load_serve_config
    from faceattr.serve.images import DECODE_BYTES_PER_PIXEL

    return load_serve_config({}).max_decode_pixels * DECODE_BYTES_PER_PIXEL / 2**20


def kubernetes_resources(entry: dict[str, Any], decode_mb: float) -> dict[str, dict[str, str]]:
    """A replica's container resources from one row: :data:`REPLICA_CORES` CPUs requested and as the limit (the
    API workers are set to that); memory requested = the replica's RSS with :data:`MEMORY_REQUEST_HEADROOM`, its
    limit = that + ``decode_mb`` (:func:`decode_budget_mb`) per API worker, in steps of 64 MiB."""
    request = entry["rss_mb"]["replica"] * MEMORY_REQUEST_HEADROOM
    limit = request + REPLICA_CORES * decode_mb
    return {
        "requests": {"cpu": str(REPLICA_CORES), "memory": _mib(request, 1.0)},
        "limits": {"cpu": str(REPLICA_CORES), "memory": _mib(limit, 1.0)},
    }


def measure_model(settings: Settings, name: str, cfg, data_root: Path, log=print) -> dict[str, dict[str, Any]]:
    """Both precisions of one model (``cfg``: its training config): ``{precision: row}``."""
    images = [(p.name, p.read_bytes()) for p in serving_images(data_root)]
    tmp = Path(tempfile.mkdtemp(prefix="faceattr-bench-sizing-"))
    try:
        env = serve_environment(tmp, {})
        export_random_model(cfg, tmp, env, data_root)
        servers: dict[str, Contender] = {}
        try:
            for precision in PRECISIONS:  # started one after the other: each start-up alone
                servers[precision] = Contender(
                    server_beside(env, tmp / precision, settings={"FACEATTR_SERVE_PRECISION": precision})
                )
                servers[precision].server.wait_ready()
            levels = sorted(settings.sizing_requests)
            for contender in servers.values():  # connections, thread pools, batch-size estimates
                for concurrency in levels:
                    contender.load(images, concurrency, 2 * concurrency, settings.serve_max_seconds)
            samples = {p: {c: LevelSamples() for c in levels} for p in PRECISIONS}
            for rep in range(settings.sizing_repetitions):
                forward = rep % 2 == 0
                for concurrency in levels if forward else levels[::-1]:
                    for precision in PRECISIONS if forward else PRECISIONS[::-1]:
                        outcome = servers[precision].load(
                            images, concurrency, settings.sizing_requests[concurrency], settings.serve_max_seconds
                        )
                        samples[precision][concurrency].add(outcome)
            rss = {p: rss_by_role(servers[p].server.process.pid) for p in PRECISIONS}
        finally:
            for contender in servers.values():
                contender.server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cores = os.cpu_count() or 1
    rows = {p: row(samples[p], rss[p], cores) for p in PRECISIONS}
    for precision, entry in rows.items():
        log(
            f"  {name} {precision}: {entry['img_s_c32']:.0f} img/s at c32 ({entry['img_s_per_core']:.0f} per core), "
            f"p50/p99 c1 {entry['c1_p50_ms']:.0f}/{entry['c1_p99_ms']:.0f} ms, c32 {entry['c32_p50_ms']:.0f}/"
            f"{entry['c32_p99_ms']:.0f} ms, RSS worker {entry['rss_mb']['worker']:.0f} MB, replica "
            f"{entry['rss_mb']['replica']:.0f} MB"
        )
    return rows


def run(settings: Settings, data_root: Path, log=print) -> dict[str, Any]:
    """Every model of ``settings.sizing_models`` at both precisions, the rule at a few request rates, and the
    manifest's resources."""
    rows: dict[str, dict[str, Any]] = {}
    for name, overrides in settings.sizing_models:
        cfg = quickstart_config(*settings.config_overrides, *overrides)
        measured = measure_model(settings, name, cfg, data_root, log)
        for precision, entry in measured.items():
            rows[f"{name}/{precision}"] = {
                "model": name,
                "backbone": str(cfg.model.backbone),
                "image_size": "x".join(str(v) for v in size_pair(cfg.data.image_size)),
                "precision": precision,
                **entry,
            }
    result: dict[str, Any] = {
        "rows": rows,
        "replica_cores": REPLICA_CORES,
        "target_utilization": TARGET_UTILIZATION,
        "rule": {key: [needed(entry, r) for r in settings.sizing_rates] for key, entry in rows.items()},
    }
    if MANIFEST_ROW in rows:
        result["manifest_row"] = MANIFEST_ROW
        result["decode_mb_per_worker"] = round(decode_budget_mb(), 1)
        result["kubernetes_resources"] = kubernetes_resources(rows[MANIFEST_ROW], result["decode_mb_per_worker"])
    return result
