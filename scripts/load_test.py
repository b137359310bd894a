"""Load test of a running faceattr service: N concurrent clients for T seconds with real encoded images.

    python scripts/load_test.py --url http://127.0.0.1:3000 --concurrency 64 --seconds 60
    python scripts/load_test.py --url ... --route /predict_batch --batch 4 --json load.json --max-rss-growth-mb 200

Each client (``benchmarks/http_load.py``, the serving benchmark's load generator: one keep-alive connection,
requests encoded once) posts one request at a time, as fast as answers come, to ``--route`` (``/predict``, or
``/predict_batch`` with ``--batch`` images per request) and starts no new request after ``--seconds``; every request
has ``--timeout`` seconds to finish, so the run is bounded in time (and, with ``--max-requests``, in count). A
warm-up (``--warmup`` seconds at the same concurrency, not counted) comes first.

Images: the files given with ``--images`` (files or folders of JPEG/PNG/WebP), else a pool made from matplotlib's
sample portrait (Grace Hopper) encoded as JPEG, PNG and WebP at several sizes, from CelebA's 178x218 to 1.2 MP.

Reported: requests, answers by status (and client-side failures by exception), images per second, latency
percentiles of the requests answered 200 (interpolated between order statistics, as in BENCHMARKS.md), and the
resident memory (RSS) of the server process tree (``bentoml serve`` and its workers, found by the port it listens
on, or ``--pid``) sampled every ``--sample-s`` seconds: idle (before the warm-up), start (after it), end, max, and
growth = end - start. Exit status 1 when any request failed or RSS grew by more than ``--max-rss-growth-mb``.

Loopback use only: this is a test tool, not a benchmark of anything across a network.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import http_load  # noqa: E402
from benchmarks.timing import percentile  # noqa: E402
from faceattr.numbers import finite_or_none  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MIB = 1024 * 1024


# --- images ----------------------------------------------------------------------------------------------------


def sample_images() -> list[tuple[str, bytes]]:
    """Real encoded photos: matplotlib's sample portrait as JPEG/PNG/WebP from 178x218 to about 1.2 MP."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photo = Image.open(path).convert("RGB")
    pool = [("grace_hopper.jpg", path.read_bytes())]
    variants = [
        ((178, 218), "JPEG", {"quality": 90}),
        ((356, 436), "JPEG", {"quality": 85}),
        ((1000, 1224), "JPEG", {"quality": 90}),  # > 1 MP: decoded at a reduced DCT scale by the service
        ((256, 300), "PNG", {}),
        ((400, 470), "WEBP", {"quality": 80}),
    ]
    for (width, height), fmt, options in variants:
        buffer = io.BytesIO()
        photo.resize((width, height), Image.Resampling.BICUBIC).save(buffer, fmt, **options)
        pool.append((f"hopper_{width}x{height}.{fmt.lower()}", buffer.getvalue()))
    return pool


def read_images(paths: list[str]) -> list[tuple[str, bytes]]:
    files: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"error: --images {item}: no such file or directory")
    if not files:
        raise SystemExit(f"error: --images {' '.join(paths)}: no .jpg/.png/.webp files")
    return [(p.name, p.read_bytes()) for p in files[:1000]]


# --- server memory -----------------------------------------------------------------------------------------------


def server_pid(url: str) -> int | None:
    """The root of the process tree listening on ``url``'s port (``bentoml serve``), if it runs on this machine."""
    import psutil

    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    pids = sorted(
        {c.pid for c in connections if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}
    )
    if not pids:
        return None
    # The listening socket is shared by `bentoml serve` and its workers: climb to the top bentoml process.
    process = psutil.Process(pids[0])
    while True:
        parent = process.parent()
        if parent is None or not _is_bentoml(parent):
            return process.pid
        process = parent


def _is_bentoml(process) -> bool:
    try:
        return any("bentoml" in part for part in process.cmdline())
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect
        return False


def _role(process) -> str:
    try:
        cmdline = process.cmdline()
    except Exception:  # noqa: BLE001 - a process that just exited
        return "?"
    if "--service-name" in cmdline:
        return cmdline[cmdline.index("--service-name") + 1]
    return "bentoml serve" if any("bentoml" in part for part in cmdline) else Path(cmdline[0]).name if cmdline else "?"


def tree_rss(pid: int) -> dict[str, int]:
    """RSS in bytes of ``pid`` and each of its descendants, keyed ``role[pid]``, plus ``total``."""
    import psutil

    root = psutil.Process(pid)
    out: dict[str, int] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            out[f"{_role(process)}[{process.pid}]"] = process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    out["total"] = sum(out.values())
    return out


class RssSampler:
    """Samples :func:`tree_rss` every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def sample(self) -> dict[str, int]:
        values = tree_rss(self.pid)
        self.samples.append((time.perf_counter() - self._t0, values))
        return values

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the server went away; the run reports what it had
                return

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- load --------------------------------------------------------------------------------------------------------


async def run_load(
    url: str,
    images: list[tuple[str, bytes]],
    concurrency: int,
    seconds: float,
    route: str = "/predict",
    batch: int = 1,
    timeout: float = 30.0,
    max_requests: int | None = None,
) -> tuple[http_load.LoadResult, float]:
    """``concurrency`` clients posting ``batch`` images per request for ``seconds``; returns what they measured and
    the wall time it took."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    path = parsed.path.rstrip("/") + route
    requests = http_load.encoded_requests(parsed.netloc, path, images, batch)
    result = await http_load.run_load(
        parsed.hostname,
        port,
        requests,
        concurrency,
        max_requests,
        seconds,
        timeout=timeout,
        tls=parsed.scheme == "https",
    )
    return result, result.elapsed


def summarize(
    result: http_load.LoadResult,
    wall: float,
    rss: RssSampler | None,
    idle: dict[str, int] | None,
    start: dict[str, int] | None,
    config: dict,
) -> dict:
    ms = [v * 1000 for v in result.latencies]
    images_ok = result.ok * config.get("batch", 1)
    report = {
        **config,
        "wall_s": round(wall, 2),
        "requests": result.requests,
        "ok": result.ok,
        "errors": result.requests - result.ok,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "client_failures": dict(result.failures),
        "error_examples": result.examples,
        "images_ok": images_ok,
        "images_per_s": round(images_ok / wall, 1) if wall else 0.0,
        "requests_per_s": round(result.requests / wall, 1) if wall else 0.0,
        "latency_ms": {
            "p50": finite_or_none(percentile(ms, 50)),
            "p90": finite_or_none(percentile(ms, 90)),
            "p99": finite_or_none(percentile(ms, 99)),
            "max": max(ms) if ms else None,
            "mean": statistics.fmean(ms) if ms else None,
        },
    }
    report["latency_ms"] = {k: None if v is None else round(v, 1) for k, v in report["latency_ms"].items()}
    if rss is not None and rss.samples and start is not None:
        totals = [values["total"] for _, values in rss.samples]
        end = rss.samples[-1][1]
        half = rss.samples[-1][0] / 2
        middle = next(values for t, values in rss.samples if t >= half)
        report["rss_mib"] = {
            "idle": round(idle["total"] / MIB, 1) if idle else None,
            "start": round(start["total"] / MIB, 1),
            "end": round(end["total"] / MIB, 1),
            "max": round(max(totals) / MIB, 1),
            "growth": round((end["total"] - start["total"]) / MIB, 1),
            # A leak grows with the requests served: it shows in the second half as much as in the first.
            "growth_second_half": round((end["total"] - middle["total"]) / MIB, 1),
            "samples": len(totals),
            "processes_end": {k: round(v / MIB, 1) for k, v in end.items() if k != "total"},
        }
        report["rss_timeline_mib"] = [(round(t, 1), round(v["total"] / MIB, 1)) for t, v in rss.samples]
    return report


def print_report(report: dict) -> None:
    lat = report["latency_ms"]
    names = report.get("image_names")
    print(
        f"{report['url']}{report['route']}: {report['concurrency']} clients x {report['seconds']} s "
        f"(batch {report['batch']})" + (f", {len(names)} distinct images" if names else "")
    )
    print(
        f"  requests {report['requests']}  ok {report['ok']}  errors {report['errors']}  "
        f"statuses {report['statuses']}  client failures {report['client_failures'] or '{}'}"
    )
    print(
        f"  {report['images_per_s']} img/s, {report['requests_per_s']} req/s over {report['wall_s']} s; latency ms "
        f"p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}"
    )
    for status, body in report["error_examples"].items():
        print(f"  e.g. {status}: {body}")
    rss = report.get("rss_mib")
    if rss:
        print(
            f"  server RSS MiB (process tree): idle {rss['idle']}  start {rss['start']}  end {rss['end']}  "
            f"max {rss['max']}  growth {rss['growth']:+} (second half {rss['growth_second_half']:+})  "
            f"({rss['samples']} samples)  end by process {rss['processes_end']}"
        )
    else:
        print("  server RSS: not measured (no local process listening on that port; pass --pid)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)")
    parser.add_argument("--route", default="/predict", help="/predict or /predict_batch")
    parser.add_argument("--batch", type=int, default=1, help="images per request (with /predict_batch)")
    parser.add_argument("--images", nargs="*", help="image files or folders (default: sample portraits)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--max-requests", type=int, default=None, help="stop after this many requests")
    parser.add_argument("--pid", type=int, default=None, help="server process (default: the one on the URL's port)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling interval")
    parser.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=None,
        help="exit 1 when the server's RSS grows more than this (MiB, end - start)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.seconds <= 0 or args.batch < 1:
        parser.error("--concurrency and --batch must be >= 1, --seconds > 0")
    if args.batch > 1 and not args.route.rstrip("/").endswith("predict_batch"):
        parser.error("--batch > 1 needs --route /predict_batch")

    images = read_images(args.images) if args.images else sample_images()
    url = args.url.rstrip("/")
    try:
        ready = httpx.get(url + "/readyz", timeout=10)
    except httpx.HTTPError as exc:
        print(f"error: {url}/readyz: {exc}", file=sys.stderr)
        return 2
    if ready.status_code != 200:
        print(f"error: {url}/readyz answered {ready.status_code}", file=sys.stderr)
        return 2
    pid = args.pid or server_pid(url)
    sampler = RssSampler(pid, args.sample_s) if pid else None
    idle = sampler.sample() if sampler else None
    if args.warmup > 0:
        http_load.run(run_load(url, images, args.concurrency, args.warmup, args.route, args.batch, args.timeout))
    start = None
    if sampler:
        sampler.samples.clear()
        start = sampler.sample()
        sampler.start()
    result, wall = http_load.run(
        run_load(url, images, args.concurrency, args.seconds, args.route, args.batch, args.timeout, args.max_requests)
    )
    if sampler:
        sampler.stop()
        sampler.sample()
    config = {
        "url": url,
        "route": args.route,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "batch": args.batch,
        "warmup_s": args.warmup,
        "server_pid": pid,
        "image_names": [name for name, _ in images],
        "image_bytes": [len(data) for _, data in images],
    }
    report = summarize(result, wall, sampler, idle, start, config)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = report["errors"] > 0
    growth = (report.get("rss_mib") or {}).get("growth")
    if args.max_rss_growth_mb is not None and growth is not None and growth > args.max_rss_growth_mb:
        print(f"FAIL: server RSS grew {growth} MiB > --max-rss-growth-mb {args.max_rss_growth_mb}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
