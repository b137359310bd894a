"""Memory: peak resident memory of a quickstart training run (``python train.py experiment=quickstart``).

The run is a subprocess sampled every 0.2 s with its DataLoader workers (see ``timing.PeakRSS`` for what the
three figures mean). ``--quick`` shortens the run with ``trainer.limit_*`` overrides (listed in the result); the
full benchmark runs the quickstart unchanged. The serving process's memory under load is measured by
``benchmarks.serving``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Settings
from benchmarks.timing import PeakRSS


def run(settings: Settings, extra_overrides: tuple[str, ...] = (), log=print) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="faceattr-bench-train-"))
    overrides = [
        "experiment=quickstart",
        f"hydra.run.dir={tmp / 'run'}",
        "callbacks.progress_bar=null",
        *settings.memory_overrides,
        *extra_overrides,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    command = [sys.executable, str(REPO / "train.py"), *overrides]
    started = time.time()
    with (tmp / "train.log").open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        with PeakRSS(process.pid) as peak:
            code = process.wait()
    wall = time.time() - started
    if code != 0:
        raise RuntimeError(f"train.py failed ({code}):\n{(tmp / 'train.log').read_text()[-3000:]}")
    record_path = tmp / "run" / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    result = {
        "command": "python train.py " + " ".join(o for o in overrides if not o.startswith("hydra.run.dir=")),
        **peak.result(),
        "wall_s": round(wall, 1),
        "global_step": record.get("global_step"),
        "best_val_auroc": record.get("best_score"),
    }
    log(
        f"  quickstart training: peak RSS {result['peak_rss_main_mb']:.0f} MB main process, "
        f"{result['peak_rss_tree_mb']:.0f} MB RSS / {result['peak_pss_tree_mb'] or float('nan'):.0f} MB PSS with "
        f"workers ({result['processes']} processes), {wall:.0f}s"
    )
    return result
