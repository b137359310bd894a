"""Shared timing helpers: warm-up, interleaved (ABAB) repetitions, medians, percentiles, peak RSS, machine info.

Every figure of the benchmarks is the median of several repetitions taken after a warm-up, and every comparison
is a ratio against a baseline measured in the same run, with baseline and candidate repetitions interleaved
(A B B A A B ...) so that background load on a shared machine hits both alike.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def median(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return math.nan
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Sequence[float], images_per_call: int = 1) -> dict[str, float]:
    """p50/p99/mean latency in milliseconds and img/s (``images_per_call`` / median latency) of timed calls."""
    p50 = percentile(seconds, 50)
    return {
        "p50_ms": p50 * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
        "mean_ms": (sum(seconds) / len(seconds)) * 1e3 if seconds else math.nan,
        "img_s": images_per_call / p50 if p50 > 0 else math.nan,
        "calls": len(seconds),
    }


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is 0."""
    try:
        numerator, denominator = float(numerator), float(denominator)
    except (TypeError, ValueError):
        return math.nan
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def interleaved(
    candidates: dict[str, Callable[[], float]], repetitions: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each candidate ``warmup`` times (discarded), then ``repetitions`` times each, interleaved.

    Each callable performs one repetition and returns its figure (e.g. img/s or seconds). The order alternates
    (A B, B A, A B, ...; for more candidates the order is rotated and reversed every other round) so that a change
    of background load during the run affects every candidate alike. Returns ``{name: [figure per repetition]}``.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repetitions):
        shift = (rep // 2) % len(names)
        order = names[shift:] + names[:shift]
        if rep % 2:
            order = order[::-1]
        for name in order:
            results[name].append(float(candidates[name]()))
    return results


def timed_calls(fn: Callable[[], Any], calls: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


class PeakRSS:
    """Samples the memory of a process and its descendants in a background thread.

    ``peak_rss_main_mb``: the largest RSS of the root process alone. ``peak_rss_tree_mb``: the largest sum of RSS
    over the process tree (an upper bound: pages shared between forked processes, such as DataLoader workers,
    count once per process). ``peak_pss_tree_mb``: the largest sum of PSS (shared pages split between the
    processes sharing them), the honest total, where /proc allows reading it.
    """

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_tree_mb = 0.0
        self.peak_main_mb = 0.0
        self.peak_pss_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        main = None
        for process in processes:
            try:
                info = process.memory_full_info()
            except psutil.AccessDenied:
                try:
                    info = process.memory_info()
                except psutil.Error:
                    continue
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", 0)
            if process.pid == self.pid:
                main = info.rss
        if main is not None:
            self.peak_main_mb = max(self.peak_main_mb, main / 2**20)
        self.peak_tree_mb = max(self.peak_tree_mb, rss / 2**20)
        self.peak_pss_mb = max(self.peak_pss_mb, pss / 2**20)
        self.peak_processes = max(self.peak_processes, len(processes))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, float]:
        return {
            "peak_rss_main_mb": round(self.peak_main_mb, 1),
            "peak_rss_tree_mb": round(self.peak_tree_mb, 1),
            "peak_pss_tree_mb": round(self.peak_pss_mb, 1) if self.peak_pss_mb else None,
            "processes": self.peak_processes,
        }


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def machine_info(repo: Path | None = None) -> dict[str, Any]:
    """Where and with what the benchmark ran: CPU, cores, memory, load, package versions, date, commit."""
    import torch

    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil comes with the project's dependencies
        memory_gb = None
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": memory_gb,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "library default (active spinning, then sleep)"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "torch",
                "torchvision",
                "lightning",
                "timm",
                "onnxruntime",
                "bentoml",
                "numpy",
                "pillow",
                "pandas",
                "httpx",
            )
        },
    }
    if repo is not None:
        info["commit"] = _git_commit(repo)
    return info
