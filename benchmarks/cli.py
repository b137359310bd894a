"""``python scripts/bench.py [--quick] [--json PATH] [--markdown PATH] [--only FAMILIES] [--serve-env K=V ...]``.

Runs the benchmark families (data, training, inference, serving, requests, sizing, memory), prints every figure and
the headline ratios with their targets, and writes them as JSON (``--json``) and as the BENCHMARKS.md report
(``--markdown``).
``--from-json PATH --markdown BENCHMARKS.md`` re-renders the report of an earlier run without measuring.
``--device cuda`` measures instead what a GPU changes (benchmarks/accelerator.py; ``--device cpu``: the same code on
the CPU); ``scripts/gpu_bench.sh`` runs it in one shot on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

FAMILIES = ("data", "training", "inference", "serving", "requests", "sizing", "memory")
#: ``--device``: the family measured on an accelerator (benchmarks/accelerator.py), run alone.
ACCELERATOR = "accelerator"
DEVICES = ("cpu", "cuda")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description="faceattr benchmarks: input pipeline, training loop, inference, serving, request cost, deployment "
        "sizing, memory. Every figure is a median of repetitions after a warm-up; every ratio compares two figures "
        "of the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="about 8 minutes instead of 12: fewer repetitions, shorter runs"
    )
    parser.add_argument(
        "--mode",
        choices=("quick", "full", "tiny"),
        default=None,
        help="full (default), quick (= --quick), tiny (smoke test of the machinery only)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure and ratio to this file")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report (BENCHMARKS.md) here")
    parser.add_argument(
        "--only",
        default=",".join(FAMILIES),
        help=f"comma-separated families to run (default: all of {','.join(FAMILIES)})",
    )
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="FACEATTR_SERVE_* setting for the served model, e.g. FACEATTR_SERVE_FORMAT=torchscript",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=None,
        help="measure, instead of the families above, what a GPU changes (benchmarks/accelerator.py): training "
        "img/s of resnet18/50 at 128 and 224 with bf16 and channels-last, loader workers per 10,000 img/s, "
        "TorchScript serving on the device; cpu runs the same code on the CPU",
    )
    parser.add_argument("--from-json", type=Path, default=None, help="render --markdown from this JSON; no runs")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--omp-wait-policy",
        choices=("passive", "default"),
        default="passive",
        help="OpenMP wait policy of torch in this process and the ones it starts (train.py, bentoml serve): "
        "passive (default) sets OMP_WAIT_POLICY=PASSIVE, which keeps multi-threaded torch from spinning on a "
        "shared or oversubscribed machine; default leaves the environment as it is",
    )
    args = parser.parse_args(argv)
    if args.mode is None:
        args.mode = "quick" if args.quick else "full"
    elif args.quick and args.mode != "quick":
        parser.error("--quick contradicts --mode " + args.mode)
    unknown = [f for f in args.only.split(",") if f and f not in FAMILIES]
    if unknown:
        parser.error(
            f"--only: unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
            f"choose from {', '.join(FAMILIES)}"
        )
    _accelerator_args(parser, args)
    for item in args.serve_env:
        if "=" not in item or not item.startswith("FACEATTR_SERVE_"):
            parser.error(f"--serve-env {item!r}: expected FACEATTR_SERVE_<KEY>=VALUE")
    return args


def _accelerator_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--device`` runs the accelerator family alone (``args.only`` becomes it)."""
    if args.device is None:
        return
    if args.only != ",".join(FAMILIES):
        parser.error("--device measures the accelerator family alone; leave out --only")
    args.only = ACCELERATOR


def _run_accelerator(args: argparse.Namespace, cfg, data_root: Path, log) -> dict[str, Any]:
    from benchmarks import accelerator, common

    return accelerator.run(args.mode, args.device, data_root, cfg.data, common.serving_images(data_root), log=log)


def command_line(args: argparse.Namespace) -> str:
    parts = ["python scripts/bench.py"]
    if args.mode == "quick":
        parts.append("--quick")
    elif args.mode == "tiny":
        parts.append("--mode tiny")
    if args.device is not None:
        parts.append(f"--device {args.device}")
    elif args.only != ",".join(FAMILIES):
        parts.append(f"--only {args.only}")
    if args.omp_wait_policy != "passive":
        parts.append(f"--omp-wait-policy {args.omp_wait_policy}")
    parts += [f"--serve-env {shlex.quote(item)}" for item in args.serve_env]
    if args.json:
        parts.append(f"--json {args.json}")
    if args.markdown:
        parts.append(f"--markdown {args.markdown}")
    return " ".join(parts)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_summary(results: dict[str, Any], out=sys.stdout) -> None:
    from benchmarks.ratios import EXTRA, RATIOS, goal

    measured = [] if results.get("families") == [ACCELERATOR] else list(RATIOS)  # --device measures no ratio
    if measured:
        print("\nratios (figure / baseline, same run):", file=out)
    for name in measured:
        value = results["ratios"].get(name)
        verdict = results["verdicts"].get(name, "")
        print(f"  {name:42s} {_fmt(value):>8}  target {goal(name):9s} {verdict}", file=out)
    for name in EXTRA if measured else ():
        print(f"  {name:42s} {_fmt(results['ratios'].get(name)):>8}", file=out)
    for family, error in results.get("errors", {}).items():
        lines = [line for line in (error or "").strip().splitlines() if line.strip()]
        print(f"  error in {family}: {lines[-1] if lines else ''}", file=out)


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    import torch

    from benchmarks import common, ratios
    from benchmarks.timing import machine_info

    settings = common.MODES[args.mode]
    families = [f for f in (*FAMILIES, ACCELERATOR) if f in args.only.split(",")]
    serve_env = dict(item.split("=", 1) for item in args.serve_env)
    results: dict[str, Any] = {
        "command": command_line(args),
        "mode": args.mode,
        "machine": machine_info(common.REPO),
        "settings": settings.as_dict(),
        "families": families,
        "durations_s": {},
        "errors": {},
    }
    started = time.time()
    cfg = common.quickstart_config(*settings.config_overrides)
    data_root = common.prepare_data(settings, cfg)
    results["data_root"] = str(data_root)
    threads = torch.get_num_threads()
    for family in families:
        log(f"[{family}]")
        t0 = time.time()
        try:
            if family == "data":
                from benchmarks import data

                results["data"] = data.run(settings, data_root, cfg.data, log=log)
            elif family == "training":
                from benchmarks import training

                results["training"] = training.run(settings, cfg, log=log)
            elif family == "inference":
                from benchmarks import inference

                results["inference"] = inference.run(settings, list(common.size_pair(cfg.data.image_size)), log=log)
            elif family == "serving":
                from benchmarks import serving

                results["serving"] = serving.run(settings, cfg, data_root, serve_env, log=log)
                if settings.serve_large:
                    large = dataclasses.replace(
                        settings,
                        serve_requests=settings.serve_large_requests,
                        serve_batch_level=False,
                        serve_repetitions=2,
                        ceiling_calls_b32=3,
                    )
                    log(f"  and a production-size model ({' '.join(settings.serve_large)}):")
                    results["serving_large"] = serving.run(
                        large,
                        common.quickstart_config(*settings.config_overrides, *settings.serve_large),
                        data_root,
                        serve_env,
                        log=log,
                    )
            elif family == "requests":
                from benchmarks import request_cost

                results["requests"] = request_cost.run(args.mode, list(request_cost.VARIANTS), log=log)
            elif family == "sizing":
                from benchmarks import sizing

                results["sizing"] = sizing.run(settings, data_root, log=log)
            elif family == ACCELERATOR:
                results[ACCELERATOR] = _run_accelerator(args, cfg, data_root, log)
            elif family == "memory":
                from benchmarks import memory

                results["memory"] = memory.run(settings, common.memory_overrides(settings, data_root), log=log)
        except Exception:  # noqa: BLE001 - one family failing must not lose the others' figures
            results["errors"][family] = traceback.format_exc()
            log(f"  failed: {traceback.format_exc().strip().splitlines()[-1]}")
        finally:
            torch.set_num_threads(threads)
        results["durations_s"][family] = round(time.time() - t0, 1)
    results["durations_s"]["total"] = round(time.time() - started, 1)
    results["ratios"] = ratios.compute(results)
    results["ratio_sources"] = {k: [list(p) for p in v] for k, v in ratios.sources(results).items()}
    results["targets"] = {name: ratios.goal(name) for name in ratios.RATIOS}
    results["verdicts"] = ratios.verdicts(results["ratios"])
    return results


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    args = parse_args(argv)
    if args.omp_wait_policy == "passive" and args.from_json is None:
        # Read by libgomp when torch is first imported (below, lazily) and by every subprocess.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from benchmarks import report

    if args.device is not None and args.from_json is None:
        from benchmarks.accelerator import check_device
        from faceattr.errors import UserError

        try:
            check_device(args.device)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args)
    print_summary(results)
    if args.json is not None and args.from_json is None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
        print(f"wrote {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(report.render(results))
        print(f"wrote {args.markdown}")
    if results.get("errors"):
        return 2
    if args.check and any(v == "MISSED" for v in results["verdicts"].values()):
        return 1
    return 0
