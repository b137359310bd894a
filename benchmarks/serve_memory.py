"""Serving memory without torch: RSS of ``bentoml serve`` and of each API worker after N requests, and which of them
map libtorch (issue 23: an ONNX model on a CPU is served with numpy and onnxruntime; target <= 400 MB each, none
mapping libtorch).

The model is one already in the BentoML store of ``--bentoml-home``, e.g. a run exported as ONNX only::

    BENTOML_HOME=/tmp/serve-mem python export.py ckpt=outputs/<day>/<run> export=onnx 'export.formats=[onnx]'
    python -m benchmarks.serve_memory --bentoml-home /tmp/serve-mem

``bentoml serve`` starts from the repo root on a free loopback port with ``--workers`` API workers
(``FACEATTR_SERVE_API_WORKERS``) and ``FACEATTR_SERVE_FORMAT=onnx``; ``--requests`` POSTs of a JPEG to ``/predict``
go out from ``--clients`` threads; then each process of the tree is read: RSS (``psutil``) and whether a mapped file
of ``/proc/<pid>/maps`` is libtorch. Prints a table and, with ``--json``, writes the figures. A couple of minutes.

``--sizes`` instead prints the installed size of each bentofile's Python packages (``bentofile.yaml``, with torch,
and ``bentofile.cpu.yaml``): the files the installed distributions' RECORDs list in this environment, for the pinned
packages alone (what ``pip install --no-deps`` of the list installs) and with their dependencies, transitively
(what the Bento's ``pip install`` of the list installs on this platform). In seconds, offline.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import psutil
import yaml
from packaging.requirements import Requirement

from benchmarks.common import REPO
from benchmarks.served_model import Server
from faceattr.atomic import write_json

#: The photo sent by default: matplotlib's sample portrait (the one the serving tests send).
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
START_TIMEOUT_S = 180
#: The bentofiles compared by ``--sizes``: today's (with torch) and the CPU one.
BENTOFILES = ("bentofile.yaml", "bentofile.cpu.yaml")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_sizes(bentofile: Path) -> dict[str, Any]:
    """MB installed here of ``bentofile``'s ``python.packages``, alone and with their dependencies (transitively,
    the requirements whose markers hold here, without extras)."""
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions()}

    def size(name: str) -> int:
        dist = installed[name]
        return sum(p.stat().st_size for f in dist.files or [] if (p := Path(dist.locate_file(f))).is_file())

    listed = [_canonical(pin.split("==")[0]) for pin in yaml.safe_load(bentofile.read_text())["python"]["packages"]]
    missing = [name for name in listed if name not in installed]
    if missing:
        raise SystemExit(f"error: {bentofile.name} lists packages not installed here: {', '.join(missing)}")
    closure, pending = set(), list(listed)
    while pending:
        name = _canonical(pending.pop())
        if name in closure or name not in installed:
            continue
        closure.add(name)
        for requirement in map(Requirement, installed[name].requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return {
        "bentofile": bentofile.name,
        "packages": len(listed),
        "listed_mb": round(sum(map(size, listed)) / 2**20, 1),
        "with_dependencies": len(closure),
        "with_dependencies_mb": round(sum(map(size, closure)) / 2**20, 1),
    }


def maps_libtorch(pid: int) -> bool:
    """Whether process ``pid`` has a libtorch shared object mapped (``/proc/<pid>/maps``)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any("libtorch" in line for line in maps)
    except OSError:
        return False


def role(process: psutil.Process, server_pid: int) -> str:
    """``bentoml serve`` for the process started, ``worker <service>`` for a BentoML worker, else its name."""
    if process.pid == server_pid:
        return "bentoml serve"
    cmdline = process.cmdline()
    if "--service-name" in cmdline:
        return f"worker {cmdline[cmdline.index('--service-name') + 1]}"
    return process.name()


def measure(bentoml_home: Path, model: str, workers: int, requests: int, clients: int, photo: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "True",
        "CUDA_VISIBLE_DEVICES": "",
        "FACEATTR_SERVE_MODEL": model,
        "FACEATTR_SERVE_FORMAT": "onnx",
        "FACEATTR_SERVE_API_WORKERS": str(workers),
    }
    log = Path(tempfile.mkstemp(prefix="faceattr-serve-memory-", suffix=".log")[1])
    server = Server(env, log)  # the serving benchmark's `bentoml serve`, on a free loopback port
    try:
        try:
            server.wait_ready(START_TIMEOUT_S)
        except RuntimeError as exc:
            raise SystemExit(f"error: {str(exc).splitlines()[0]} (its log: {log})") from None
        files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}

        def post(_: int) -> int:
            with httpx.Client(timeout=60) as client:
                return client.post(f"{server.url}/predict", files=files).status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(post, range(requests)))
        seconds = time.perf_counter() - started
        pid = server.process.pid
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        processes = [
            {
                "pid": p.pid,
                "role": role(p, pid),
                "rss_mb": round(p.memory_info().rss / 2**20, 1),
                "maps_libtorch": maps_libtorch(p.pid),
            }
            for p in tree
        ]
    finally:
        server.stop()
    return {
        "model": model,
        "api_workers": workers,
        "requests": requests,
        "answered_200": statuses.count(200),
        "seconds": round(seconds, 2),
        "processes": processes,
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bentoml-home", type=Path, help="BENTOML_HOME holding the exported model")
    parser.add_argument("--model", default="faceattr", help="model tag in that store (default: faceattr, the latest)")
    parser.add_argument("--workers", type=int, default=2, help="API workers (default 2)")
    parser.add_argument("--requests", type=int, default=300, help="POSTs to /predict before measuring (default 300)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--photo", type=Path, default=PHOTO, help="the JPEG to send")
    parser.add_argument("--json", type=Path, help="write the figures there")
    parser.add_argument("--sizes", action="store_true", help="the bentofiles' installed package sizes instead")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [installed_sizes(REPO / name) for name in BENTOFILES]
        for row in sizes:
            print(
                f"{row['bentofile']:<20} {row['packages']:>3} packages {row['listed_mb']:>8} MB; with dependencies "
                f"{row['with_dependencies']:>3} {row['with_dependencies_mb']:>8} MB"
            )
        cpu, full = sizes[1], sizes[0]
        print(
            f"CPU / today: {cpu['listed_mb'] / full['listed_mb']:.3f} (packages), "
            f"{cpu['with_dependencies_mb'] / full['with_dependencies_mb']:.3f} (with dependencies)"
        )
        if args.json:
            write_json(args.json, sizes)
        return
    if args.bentoml_home is None:
        parser.error("--bentoml-home is required (or --sizes)")
    result = measure(args.bentoml_home, args.model, args.workers, args.requests, args.clients, args.photo)
    print(f"{result['answered_200']}/{result['requests']} answered 200 in {result['seconds']} s")
    print(f"{'pid':>8}  {'process':<22} {'RSS MB':>8}  libtorch")
    for p in result["processes"]:
        print(f"{p['pid']:>8}  {p['role']:<22} {p['rss_mb']:>8}  {'yes' if p['maps_libtorch'] else 'no'}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
