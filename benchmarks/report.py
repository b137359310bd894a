"""BENCHMARKS.md from the JSON results of ``scripts/bench.py`` (``--markdown``, or ``--from-json`` to re-render)."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.ratios import EXTRA, RATIOS, goal, value


def _n(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _machine(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    load = m.get("load_average_at_start")
    return [
        f"- **Command:** `{results.get('command', 'python scripts/bench.py')}` ({results.get('mode')} mode, "
        f"{_n(results.get('durations_s', {}).get('total'))} s)",
        f"- **Date:** {m.get('date')}; commit {m.get('commit') or 'unknown'}",
        f"- **Machine:** {m.get('cpu')}, {m.get('cores_usable')} usable cores, {m.get('memory_gb')} GiB, "
        f"GPU: {m.get('gpu') or 'none'}; {m.get('os')}, Python {m.get('python')}; torch intra-op threads "
        f"{m.get('torch_threads')}",
        f"- **Load average at start:** {load} (the machine is shared: absolute figures move with the load, "
        "the ratios much less: each compares two figures measured interleaved in the same run)",
        f"- **OpenMP wait policy:** {m.get('omp_wait_policy')} for the benchmark and the processes it starts "
        "(`train.py`, `bentoml serve`): with torch's default (active spinning) on a machine whose cores are "
        "also busy with other work, 2-thread torch steps were 3-10x slower and erratic; `--omp-wait-policy "
        "default` measures without it",
        f"- **Versions:** {versions}",
        "",
    ]


def _ratios(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, (_, meaning) in RATIOS.items():
        value = results.get("ratios", {}).get(name)
        verdict = results.get("verdicts", {}).get(name, "")
        rows.append([f"`{name}`", _n(value, 2), goal(name), verdict, meaning])
    for name, meaning in EXTRA.items():
        rows.append([f"`{name}`", _n(results.get("ratios", {}).get(name), 2), "", "", meaning])
    return _table(["ratio", "value", "target", "", "what it means"], rows)


def _data(results: dict[str, Any]) -> list[str]:
    d = results["data"]
    pw, ld = d["per_worker"], d["loader"]
    eq = d.get("equivalence", {})
    lines = [
        "## Input pipeline",
        "",
        f"JPEG files (generated 178x218 CelebA-format faces) -> centre crop {d.get('crop')} -> resize to "
        f"{d.get('image_size')} -> random horizontal flip -> batch of {d.get('batch_size')} -> normalized float32. "
        "**faceattr**: `CelebAImages` with `data.jpeg_scaling` "
        f"({'on' if d.get('jpeg_scaling', False) else 'off'}: JPEGs decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT "
        "scaling where the crop stays at least the input size; off: decoded whole; then `faceattr/preprocess.py`'s "
        "crop and Pillow resize), transforms.v2 on uint8, `collate_skipping_corrupt` + the model's `float()/255` and "
        "normalization (counted here). **Seed article**: one pandas row per item, "
        "PIL open/convert, torchvision v1 `CenterCrop`/`Resize`/`RandomHorizontalFlip`/`ToTensor`/`Normalize` "
        "(`benchmarks/seed_baseline.py`). Outputs agree up to resampling differences (PIL vs torch, and the "
        f"reduced-scale decode): mean |diff| {eq.get('mean_abs_diff_pixels')} / max "
        f"{eq.get('max_abs_diff_pixels')} in 0-255 pixel units.",
        "",
    ]
    lines += _table(
        ["path", "seed article img/s", "faceattr img/s", "faceattr / seed"],
        [
            [
                f"one worker process (`num_workers=0`, 1 thread, {d.get('images_per_repetition')} images per "
                "repetition)",
                _n(pw["seed_img_s"]),
                _n(pw["ours_img_s"]),
                _n(value(results, "data/per_worker/ours_reps", "data/per_worker/seed_reps"), 2),
            ],
            *(
                [label, _n(pw["seed_img_s"]), _n(pw[f"{key}_img_s"]), _n(value(results, reps, seed_reps), 2)]
                for key, label in (
                    (
                        "ours_full_decode",
                        "one worker process, every JPEG decoded at full size (`data.jpeg_scaling=false`)",
                    ),
                    ("cached", "one worker process reading the pre-decoded cache (`data.cache`)"),
                )
                if f"{key}_img_s" in pw
                for reps, seed_reps in [(f"data/per_worker/{key}_reps", "data/per_worker/seed_reps")]
            ),
            [
                f"end-to-end DataLoader, `num_workers={ld['num_workers']}`, steady state "
                f"({ld['batches_per_repetition']} batches after the first)",
                _n(ld["seed_img_s"]),
                _n(ld["ours_img_s"]),
                _n(value(results, "data/loader/ours_reps", "data/loader/seed_reps"), 2),
            ],
        ],
    )
    lines += [
        f"First batch of a fresh 2-worker loader (worker start-up): faceattr {ld.get('ours_first_batch_s')} s, "
        f"seed {ld.get('seed_first_batch_s')} s. Repetitions (img/s): per worker faceattr {pw['ours_reps']}, "
        f"seed {pw['seed_reps']}.",
        "",
    ]
    return lines


def _starve(results: dict[str, Any]) -> list[str]:
    d, t = results.get("data"), results.get("training")
    if not d or not t:
        return []
    per_worker = d["per_worker"]["ours_img_s"]
    loader = d["loader"]["ours_img_s"]
    step = t["raw_img_s"]
    return [
        "### Would the model starve?",
        "",
        f"The quickstart training step ({t['backbone']}, batch {t['batch_size']}, forward + backward + AdamW) runs "
        f"at **{_n(step)} img/s** on this CPU; faceattr's 2-worker loader delivers **{_n(loader)} img/s** "
        f"(measured alone), one worker {_n(per_worker)} img/s. On this machine the loader is "
        f"{_n(loader / step, 1)}x faster than the step, so the model does not wait for data (both share the same "
        "2 cores while training, so neither reaches its solo figure). No GPU was available to measure a GPU step; "
        f"a GPU step of R img/s needs about R / {_n(per_worker)} worker processes (one per core), e.g. "
        f"{_n(10000 / per_worker, 1)} workers for 10,000 img/s.",
        "",
    ]


def _training(results: dict[str, Any]) -> list[str]:
    t = results["training"]
    lines = [
        "## Training loop",
        "",
        f"{t['backbone']} at {t['image_size'][0]}x{t['image_size'][1]}, batch {t['batch_size']}, "
        f"{t['optimizer'].rsplit('.', 1)[-1]} + per-step schedule, {t['threads']} threads, uint8 batches already in "
        f"memory; {t['steps_timed']} timed steps after {t['warmup_steps']} warm-up steps per repetition. Lightning: "
        "TensorBoard logger + LR monitor, logging every "
        f"{t['log_every_n_steps']} steps, no validation/checkpoint in the timed steps; the hand-written loop reads "
        "the loss as a float at the same interval.",
        "",
    ]
    rows = [
        ["hand-written PyTorch loop", _n(t["raw_steps_s"], 3), _n(t["raw_img_s"]), "1.000", t["raw_reps"]],
        [
            "Lightning `Trainer.fit`",
            _n(t["lightning_steps_s"], 3),
            _n(t["lightning_img_s"]),
            _n(value(results, "training/lightning_reps", "training/raw_reps"), 3),
            t["lightning_reps"],
        ],
    ]
    if t.get("lightning_progress_bar_reps"):
        rows.append(
            [
                "Lightning + TQDM progress bar (refresh 10)",
                _n(t["lightning_progress_bar_steps_s"], 3),
                _n(t["lightning_progress_bar_steps_s"] * t["batch_size"]),
                _n(value(results, "training/lightning_progress_bar_reps", "training/raw_reps"), 3),
                t["lightning_progress_bar_reps"],
            ]
        )
    lines += _table(["loop", "steps/s", "img/s", "vs raw loop", "repetitions (steps/s)"], rows)
    lines += [f"`Trainer.fit` start-up before the first step: {t.get('fit_startup_s')} s (not in steps/s).", ""]
    return lines


def _inference(results: dict[str, Any]) -> list[str]:
    inf = results["inference"]
    lines = [
        "## Inference (CPU)",
        "",
        f"Randomly initialized models at {inf['image_size'][0]}x{inf['image_size'][1]}, exported by "
        "`faceattr.export.build` (normalization + backbone + sigmoid), {threads} intra-op threads; eager = the same "
        "module under `torch.inference_mode`; ONNX Runtime {spin}. The runtimes' calls alternate one by one "
        'within each repetition; img/s = batch / p50 latency of a repetition (median over repetitions); "vs eager" '
        "is the median of the per-repetition ratios.".format(
            threads=inf["threads"],
            spin="with its default session options"
            if inf.get("onnx_spinning", True)
            else "without idle spinning of its threads (`session.intra_op.allow_spinning=0`, the counterpart of "
            "`OMP_WAIT_POLICY=PASSIVE` for torch)",
        ),
        "",
    ]
    rows = []
    for backbone, entry in inf["models"].items():
        for batch in (1, 32):
            for runtime in ("eager", "torchscript", "onnx"):
                e = entry[f"{runtime}_b{batch}"]
                paired = value(
                    results,
                    f"inference/models/{backbone}/{runtime}_b{batch}/reps",
                    f"inference/models/{backbone}/eager_b{batch}/reps",
                )
                rows.append(
                    [
                        backbone if runtime == "eager" else "",
                        batch if runtime == "eager" else "",
                        runtime,
                        _n(e["p50_ms"], 2),
                        _n(e["p99_ms"], 2),
                        _n(e["img_s"]),
                        _n(paired, 2),
                    ]
                )
    lines += _table(["model", "batch", "runtime", "p50 ms", "p99 ms", "img/s", "vs eager"], rows)
    return lines


def _levels(figures: dict[str, Any]) -> list[str]:
    """The load levels (``c1``, ``c8``, ``c32`` ...) of a serving result, by concurrency."""
    return sorted((k for k in figures if k.startswith("c") and k[1:].isdigit()), key=lambda k: int(k[1:]))


def _level_row(label: str, e: dict[str, Any], counts: bool = True) -> list[Any]:
    """One load level of the serving table: img/s, latency, mean batch, (requests and errors), CPU per image."""
    cpu = e.get("cpu_ms_per_image") or {}
    errors = ", ".join(f"{k}: {v}" for k, v in e.get("errors", {}).items()) or "0"
    return [
        label,
        _n(e["img_s"]),
        _n(e["p50_ms"], 1),
        _n(e["p99_ms"], 1),
        _n(e["mean_batch"], 1),
        e["requests_ok"] if counts else "",
        errors if counts else "",
        *(_n(cpu.get(stage), 2) for stage in ("client", "api", "model", "server")),
    ]


def _serving(
    results: dict[str, Any],
    family: str = "serving",
    heading: str = "## Serving",
    what: str = "the exported quickstart model",
) -> list[str]:
    s = results[family]
    lines = [
        heading,
        "",
        f"`bentoml serve` of {what} ({s['backbone']} at {s.get('image_size', '?')}, random weights) in a temporary "
        f"BentoML store with the default service settings: format **{s['format']}** (`auto`), artefact "
        f"**{s.get('artefact', s['format'])}** (`precision: auto`; the fp32 rows: a second server beside it with "
        "`FACEATTR_SERVE_PRECISION=fp32`, loaded right after it at the highest level), runner "
        f"`{s.get('runner', 'inline')}`, `api_workers={s['api_workers']}`, `num_threads={s['num_threads']}`, "
        f"`max_batch_size={s['max_batch_size']}`, `max_latency_ms={s['max_latency_ms']}`"
        f"{' (overrides: ' + str(s['overrides']) + ')' if s.get('overrides') else ''}. "
        "Clients: `benchmarks/http_load.py` (pre-encoded HTTP/1.1 requests on keep-alive connections, uvloop) "
        f"on the same machine, one request = one real JPEG ({s['image_bytes_mean']} bytes on average) to "
        f"`{s.get('route', '/predict')}`"
        "; latency is client-side. Mean batch = images per model call (`faceattr_model_batch_size` on "
        "`/metrics`, over all API workers). CPU per image (user + system time of each process, read from the "
        "kernel before and after each level): the load generator; the API processes less their model threads "
        "(HTTP, multipart parsing, decoding, resizing, batching, JSON); the model threads (`faceattr-model` and "
        "the thread pool they start, whose threads inherit the name); the whole server process tree (API, model "
        "and `bentoml serve`'s supervisor).",
        "",
    ]
    levels = _levels(s)
    labelled = [(key[1:], s[key]) for key in levels]
    labelled += [
        (f"{key[1:]}, face=detect ({s['face_detect'].get('images')} photos with a face found)", e)
        for key, e in (s.get("face_detect") or {}).items()
    ]
    rows = []
    for label, e in labelled:
        if not isinstance(e, dict):  # the route and photo count beside the levels
            continue
        rows.append(_level_row(label, e))
    for key in (k for k in s if k.startswith("batch_")):
        e = s[key]
        label = f"{e['clients']} clients x {e['images_per_request']} images per `/predict_batch` request"
        rows.append(_level_row(label, e, counts=False))
    fp32 = s.get("fp32") or {}
    rows += [_level_row(f"{key[1:]}, fp32 artefact", fp32[key]) for key in _levels(fp32)]
    for label, c in (("", s["inprocess_b32"]), (", fp32 artefact", fp32.get("inprocess_b32"))):
        if c:
            rows.append(
                [
                    f"in-process, batch {c['batch']} (ceiling){label}",
                    _n(c["img_s"]),
                    _n(c["p50_ms"], 1),
                    "",
                    c["batch"],
                    "",
                    "",
                    "",
                    "",
                    _n(c.get("cpu_ms_per_image"), 2),
                    "",
                ]
            )
    header = ["concurrency", "img/s", "p50 ms", "p99 ms", "mean batch", "requests", "errors", "CPU ms/img: client"]
    lines += _table([*header, "API", "model", "server tree"], rows)
    lines += [f"Start-up: export {s.get('export_s')} s, `bentoml serve` ready in {s.get('startup_s')} s.", ""]
    if s.get("cpu_bound_ratio_estimate") is not None and levels:
        lines += _cpu_paragraphs(s, family, levels[-1])
    if s.get("plain_bentoml"):
        lines += _plain_peer(results, family)
    return lines


def _cpu_paragraphs(s: dict[str, Any], family: str, top_key: str) -> list[str]:
    """Where the CPU goes at the highest concurrency, and (quickstart model) the API / model CPU ratio's method."""
    top = s[top_key]["cpu_ms_per_image"]
    model_alone = s["inprocess_b32"].get("cpu_ms_per_image")
    spent = sum(top.get(stage, math.nan) for stage in ("client", "api", "model"))
    estimate = s["cpu_bound_ratio_estimate"]
    share = top["api"] / top["model"] if top.get("model") else math.nan  # per-request work / the model's compute
    lines = [
        "**Where the CPU goes.** The load generator, the API workers and the models share the same cores, so "
        "at saturation img/s is inversely proportional to the CPU time spent per image. At concurrency "
        f"{top_key[1:]} one image costs {_n(spent, 1)} ms of CPU: {_n(top['client'], 1)} ms in the load "
        f"generator, {_n(top['api'], 1)} ms of per-request work in the API processes (BentoML's HTTP stack and "
        "middleware, the upload reader's one multipart parse, decoding, resizing, batching, JSON) and "
        f"{_n(top['model'], 1)} ms in the model, against {_n(model_alone, 1)} ms for the model alone in-process at "
        f"batch {s['inprocess_b32']['batch']}: a CPU-bound estimate of {_n(estimate, 2)} for serve/in-process"
        + (
            " (above 1: the served model, one thread per API worker at the batches it sees, spends less CPU per "
            "image than the in-process one running one batch of 32 on every core). "
            if estimate is not None and estimate > 1
            else ". "
        )
        + (
            f"The per-request work is {_n(share, 1)} x this "
            "small model's compute, so it bounds the ratio: for the quickstart model serve/in-process is "
            f"reported, and its target (>= {RATIOS['serve_vs_inprocess_resnet50_128'][0]}) applies to the "
            "production-size model below, whose compute dominates."
            if family == "serving"
            else f"Here the same per-request work is {_n(share, 2)} x the model's compute: this is the model the "
            "serve/in-process target (>= "
            f"{RATIOS['serve_vs_inprocess_resnet50_128'][0]}, `serve_vs_inprocess_resnet50_128`) applies to, and the "
            "CPU-bound estimate is the most the target can get on these cores with this per-request work (the fp32 "
            "artefact's figure, whose compute is ~3x int8's: `serve_vs_inprocess_resnet50_128_fp32`)."
        ),
        "",
    ]
    fp32 = s.get("fp32") or {}
    if family == "serving" and fp32.get(top_key):  # the target's figure is the fp32 model's
        int8 = top
        top, model_alone = fp32[top_key]["cpu_ms_per_image"], fp32["inprocess_b32"].get("cpu_ms_per_image")
    else:
        int8 = None
    if family == "serving" and top.get("model"):
        name = "api_cpu_per_model_cpu_quickstart"
        subtracted = top["api"] + top["model"] - (model_alone or math.nan)
        with_int8 = (
            f" With the int8 artefact (the default on a CPU) the same API work, {_n(int8['api'], 2)} ms, meets a "
            f"cheaper model, {_n(int8['model'], 2)} ms: {_n(int8['api'] / int8['model'], 2)}."
            if int8 and int8.get("model")
            else ""
        )
        lines += [
            f"**API CPU / model CPU** (`{name}`, target {goal(name)}): {_n(top['api'], 2)} ms / "
            f"{_n(top['model'], 2)} ms of CPU per image = {_n(top['api'] / top['model'], 2)} at concurrency "
            f"{top_key[1:]}, fp32 artefact.{with_int8} Method: the model runs inline in each API worker, on its own "
            "thread; the "
            "model's CPU is that of the threads named `faceattr-model` (the model thread and the runtime's thread "
            "pool it starts, whose threads inherit the name), the API's the rest of the API worker processes, "
            "both per answered image (the medians over the repetitions). Cross-check: the API processes' whole "
            f"CPU less the in-process model's at batch {s['inprocess_b32']['batch']} ({_n(model_alone, 2)} ms per "
            f"image) would give {_n(subtracted, 2)} ms of API CPU per image, "
            f"{_n(subtracted / model_alone if model_alone else math.nan, 2)} x the model (the model is less "
            "efficient at the smaller batches it sees when served, which this method counts as API time).",
            "",
        ]
    batch_keys = [k for k in s if k.startswith("batch_")]
    if batch_keys:
        b = s[batch_keys[0]]
        cpu = b["cpu_ms_per_image"]
        lines += [
            f"The `/predict_batch` row keeps as many images in flight ({b['clients']} clients x "
            f"{b['images_per_request']} images) with one HTTP request and one upload parse per "
            f"{b['images_per_request']} images: {_n(sum(cpu.get(k, math.nan) for k in ('client', 'api', 'model')), 1)} "
            f"ms of CPU per image (client {_n(cpu['client'], 1)}, API {_n(cpu['api'], 1)}, model "
            f"{_n(cpu['model'], 1)}) and {_n(b['img_s'])} img/s: the difference to the single-image rows is the "
            "per-request cost, which batching model calls cannot remove.",
            "",
        ]
    return lines


def _plain_peer(results: dict[str, Any], family: str) -> list[str]:
    """The plain BentoML peer's figures at each worker count, each level against ours (paired)."""
    s = results[family]
    peer = s["plain_bentoml"]
    name = "served_vs_plain_bentoml_quickstart" if family == "serving" else "served_vs_plain_bentoml_resnet50_128"
    rows = []
    for workers, figures in peer["workers"].items():
        for key in _levels(figures):
            e = figures[key]
            cpu = e.get("cpu_ms_per_image") or {}
            errors = ", ".join(f"{k}: {v}" for k, v in e["errors"].items()) or "0"
            paired = value(results, f"{family}/{key}/reps", f"{family}/plain_bentoml/workers/{workers}/{key}/reps")
            rows.append(
                [
                    workers,
                    key[1:],
                    _n(e["img_s"]),
                    _n(e["p50_ms"], 1),
                    _n(e["p99_ms"], 1),
                    _n(e["mean_batch"], 1),
                    e["requests_ok"],
                    errors,
                    _n(cpu.get("client"), 2),
                    _n(cpu.get("server"), 2),
                    _n(paired, 2),
                ]
            )
    header = ["workers", "concurrency", "img/s", "p50 ms", "p99 ms", "mean batch", "requests", "errors"]
    startups = ", ".join(f"{w} worker(s) {f.get('startup_s')} s" for w, f in peer["workers"].items())
    return [
        f"**The plain BentoML peer** (`{name}`, target {goal(name)}: "
        f"{_n(results.get('ratios', {}).get(name), 2)}). The same exported model served by "
        "`benchmarks/plain_bentoml_service.py`, a BentoML service written the way BentoML's documentation and "
        "a typical tutorial write one: a `PIL.Image.Image` input (multipart field "
        f"`{peer.get('field', 'images')}`), torchvision `transforms.v2` (`ToImage`, `CenterCrop` of the aligned "
        "face, `Resize`, `ToDtype(float32, scale=True)`; the model normalizes inside), the TorchScript artefact "
        "loaded with `torch.jit.load` from the model store (`bentoml.models.BentoModel`), and one "
        "`@bentoml.api(batchable=True, max_batch_size=32)` endpoint (BentoML's adaptive batching, its default "
        "latency budget and access log), no faceattr code. One `bentoml serve` per worker count, started after "
        "ours and running beside it; at every level of every repetition each server was loaded right after the "
        "other by the same load generator with the same JPEGs (the order reversed every other repetition). Mean "
        "batch = requests per call of the batchable endpoint (`bentoml_service_adaptive_batch_size`). CPU: the "
        "load generator and the peer's whole process tree. The last column is faceattr's img/s / the peer's at "
        f"that level (the median of the per-repetition ratios). Best worker count at concurrency "
        f"{_levels(s)[-1][1:] if _levels(s) else '?'}: {peer.get('best_workers')}, the figure the ratio compares "
        f"with. Start-up: {startups}.",
        "",
        *_table([*header, "CPU ms/img: client", "server tree", "faceattr / peer"], rows),
    ]


def _requests(results: dict[str, Any]) -> list[str]:
    """What each change of a per-request step does to the API's CPU (benchmarks/request_cost.py)."""
    r = results["requests"]
    rows = []
    for name, v in r["variants"].items():
        c32, c1 = v["c32"], v["c1"]
        rows.append(
            [
                f"`{name}`",
                v["what"],
                _n(c32["api_cpu_ms_per_request"], 3),
                _n(c32["api_cpu_vs_baseline"], 3),
                _n(c32["model_cpu_ms_per_image"], 3),
                _n(c32["api_per_model_cpu"], 2),
                _n(c32["img_s"]),
                f"{_n(c32['p50_ms'])} / {_n(c32['p99_ms'])}",
                f"{_n(c1['api_cpu_ms_per_request'], 3)} ({_n(c1['api_cpu_vs_baseline'], 3)})",
            ]
        )
    header = [
        "variant",
        "what it changes",
        "API CPU ms/request, c32",
        "/ baseline (paired)",
        "model CPU ms/image",
        "API / model",
        "img/s c32",
        "p50 / p99 ms c32",
        "API CPU ms/request c1 (/ baseline)",
    ]
    return [
        "## Request cost",
        "",
        f"`{r['command']}` or `python scripts/bench.py --only requests` (benchmarks/request_cost.py): the "
        f"quickstart model ({r['backbone']}, random weights, {r['precision']} ONNX) served by one `bentoml serve` "
        "per variant side by side (`benchmarks/request_variants.py`: each changes ONE thing against the service as "
        "it is), loaded with the same generated JPEGs "
        f"({r['image_bytes_mean']} bytes on average) at 32 clients and at 1, every server back to back in each of "
        f"{r['reps']} repetitions (reverse order every other one). API CPU = the API worker processes less their "
        "model threads, per request. The cores are shared by every server and the load generator: only the paired "
        "ratio to the baseline compares. Kept: the baseline's `trace_predictions: false` (the prediction routes "
        "skip BentoML's OpenTelemetry middleware; `traced` is the service before it). The decision on the others, "
        "from three runs whose paired ratios moved by about +-0.08 between runs, is in docs/serving.md, *Request "
        "cost*.",
        "",
        *_table(header, rows),
    ]


def _sizing(results: dict[str, Any]) -> list[str]:
    """The sizing table (model x precision), the rule, and the Kubernetes resources of docs/serving.md."""
    z = results["sizing"]
    rows = []
    for entry in z["rows"].values():
        rss = entry["rss_mb"]
        rows.append(
            [
                f"{entry['model']} ({entry['backbone']} at {entry['image_size']})",
                entry["precision"],
                _n(entry["img_s_per_core"]),
                _n(entry["img_s_c32"]),
                f"{_n(entry['c1_p50_ms'], 1)} / {_n(entry['c1_p99_ms'], 1)}",
                f"{_n(entry['c32_p50_ms'], 1)} / {_n(entry['c32_p99_ms'], 1)}",
                _n(rss["worker"]),
                _n(rss["serve"]),
                f"{_n(rss['replica'])} ({rss['workers']} workers)",
            ]
        )
    header = [
        "model",
        "precision",
        "img/s per core",
        f"img/s at c32 ({_n(next(iter(z['rows'].values()))['cores'] if z['rows'] else None)} cores)",
        "p50 / p99 ms, c1",
        "p50 / p99 ms, c32",
        "RSS MB per API worker",
        "`bentoml serve`",
        "replica",
    ]
    utilization = z["target_utilization"]
    rule_rows = [
        [key, *(f"{n['cores']} cores ({n['replicas']} x {z['replica_cores']}), {_n(n['gib'], 1)} GiB" for n in needs)]
        for key, needs in z["rule"].items()
    ]
    rates = [n["requests_per_s"] for n in next(iter(z["rule"].values()), [])]
    lines = [
        "## Sizing a deployment",
        "",
        "`python scripts/bench.py --only sizing` (benchmarks/sizing.py): each model (random weights) exported with "
        "its int8 artefact and served twice side by side by faceattr's service with the default settings (one API "
        "worker per core), `FACEATTR_SERVE_PRECISION=fp32` and `int8`, loaded with one JPEG per request at 1 and "
        "32 concurrent clients, the servers and levels alternating. **img/s per core** = 1000 / the server process "
        "tree's CPU ms per image at 32 clients (API workers, model threads, `bentoml serve`; the load generator, "
        "which shares the cores here, is not counted); img/s at c32 is what this machine served with the load "
        "generator on the same cores. Latency is client-side. RSS after the load: the largest API worker, "
        "`bentoml serve`, and the whole replica (its process tree).",
        "",
        *_table(header, rows),
        f"**The rule.** For R requests/s (one image each): N = ceil(R / ({utilization} x img/s per core)) cores "
        f"(planned at {utilization:.0%} CPU, headroom for bursts and the p99), in replicas of "
        f"{z['replica_cores']} cores (`FACEATTR_SERVE_API_WORKERS={z['replica_cores']}`), each holding the "
        "replica's RSS: M = replicas x that. Worked out:",
        "",
        *_table(["model / precision", *(f"R = {r:,} requests/s" for r in rates)], rule_rows),
    ]
    resources = z.get("kubernetes_resources")
    if resources:
        lines += [
            f"**Kubernetes.** One replica of `{z['manifest_row']}` (what `precision: auto` serves on a CPU), as "
            "docs/serving.md's manifest requests it (memory requested: the replica's RSS x 1.25; its limit adds "
            f"the service's decoding budget, {_n(z.get('decode_mb_per_worker'))} MB per API worker with the default "
            "`max_decode_pixels`, so that the largest uploads decode instead of the replica being killed; 64 MiB "
            "steps; tests/test_deploy.py checks that the manifest carries these):",
            "",
            "```yaml",
            "resources:",
            f'  requests: {{cpu: "{resources["requests"]["cpu"]}", memory: {resources["requests"]["memory"]}}}',
            f'  limits: {{cpu: "{resources["limits"]["cpu"]}", memory: {resources["limits"]["memory"]}}}',
            "```",
            "",
        ]
    return lines


def _memory(results: dict[str, Any]) -> list[str]:
    mem, serve = results.get("memory"), results.get("serving")
    if not mem and not serve:
        return []
    rows = []
    if mem:
        rows.append(
            [
                f"training: `{mem['command']}` ({mem['wall_s']} s, {mem['global_step']} steps)",
                _n(mem["peak_rss_main_mb"]),
                _n(mem["peak_rss_tree_mb"]),
                _n(mem["peak_pss_tree_mb"]),
                mem["processes"],
            ]
        )
    if serve:
        for label, key in (("serving at rest", "rss_at_rest"), ("serving under load (all levels)", "rss_under_load")):
            r = serve.get(key)
            if r:
                rows.append(
                    [
                        label,
                        _n(r["peak_rss_main_mb"]),
                        _n(r["peak_rss_tree_mb"]),
                        _n(r["peak_pss_tree_mb"]),
                        r["processes"],
                    ]
                )
    return [
        "## Memory",
        "",
        "Peak over the run, sampled every 0.2 s (every 1 s for the serving process under load, so that the "
        "sampling stays out of the load generator's CPU figures). Main = the root process; tree = it and its children "
        "(DataLoader workers; BentoML's API and model processes): RSS summed (counts shared pages once per "
        "process) and PSS summed (shared pages split: the real total).",
        "",
    ] + _table(["process", "main RSS MB", "tree RSS MB", "tree PSS MB", "processes"], rows)


def _accelerator(results: dict[str, Any]) -> list[str]:
    """The GPU section: training img/s, loader workers per 10,000 img/s, serving (TorchScript on the device, fp32 and
    int8 ONNX on the CPU)."""
    a = results["accelerator"]
    dev, target = a["device"], a["target_img_s"]
    on_gpu = dev["device"] == "cuda"
    where = (
        f"**{dev['name']}** ({dev['memory_gib']} GiB, compute capability {dev['capability']}, driver "
        f"{dev.get('driver') or 'unknown'}; torch {dev['torch']}, CUDA {dev['cuda']}, cuDNN {dev['cudnn']}); host "
        f"{dev['host_cpu']}, {dev['host_cores']} cores"
        if on_gpu
        else f"**the CPU** ({dev['name']}, {dev['host_cores']} cores, torch {dev['torch']}): `--device cpu` runs the "
        "GPU measurement's code on the CPU, so these are not GPU figures"
    )
    settings = a["settings"]
    loaders = {entry["image_size"]: entry for entry in a["loader"]}
    lines = [
        "## GPU",
        "",
        f"`scripts/bench.py --device {dev['device']}` (benchmarks/accelerator.py) on {where}.",
        "",
        *[f"**{name} failed:** `{error}`\n" for name, error in (a.get("errors") or {}).items()],
        "### Training",
        "",
        f"The step `train.py` runs (`FaceAttrModule`, AdamW + per-step cosine schedule, random init), batch "
        f"{settings['batch_size']}, bf16 autocast (`precision=bf16-mixed`), channels-last; uint8 batches made once "
        "(pinned in host memory on a GPU, as the datamodule's loader pins them) and copied to the device by every "
        "step: the loader is not measured. Lightning `Trainer.fit` as "
        "the project runs it (TensorBoard logger, LR monitor) and the hand-written loop of `benchmarks/training.py`, "
        f"interleaved; img/s over {settings['steps']} steps after {settings['warmup_steps']} warm-up steps, the "
        f"device synchronized at both ends, median of {settings['repetitions']} repetitions. Loader workers to feed "
        "it: Lightning's img/s / one worker's img/s at that size (below).",
        "",
    ]
    rows = []
    for t in a["training"]:
        loader = loaders.get(t["image_size"], {})
        compiled = t.get("compiled") or {}
        rows.append(
            [
                t["backbone"],
                f"{t['image_size']}x{t['image_size']}",
                _n(t["lightning_img_s"]),
                _n(t["raw_img_s"]),
                _n(t["lightning_img_s"] / t["raw_img_s"], 2) if t["raw_img_s"] else "n/a",
                _n(compiled.get("lightning_img_s"))
                if "lightning_img_s" in compiled
                else ("failed: " + compiled["error"] if "error" in compiled else ""),
                _n(t.get("peak_memory_gib"), 1) if t.get("peak_memory_gib") is not None else "",
                " / ".join(_n(t["lightning_img_s"] / loader[k], 1) for k in ("jpeg_img_s", "cached_img_s"))
                if loader
                else "",
            ]
        )
    ref = a["published_reference"]
    rows.append(
        [
            f"{ref['backbone']} on {ref['hardware']}, {ref['precision']}: published by NVIDIA ({ref['source']}), "
            "not measured",
            f"{ref['image_size']}x{ref['image_size']}",
            f"~{_n(ref['img_s'])}",
            *[""] * 5,
        ]
    )
    lines += _table(
        [
            "backbone",
            "input",
            "Lightning img/s",
            "hand-written loop img/s",
            "Lightning / loop",
            "torch.compile img/s (Lightning)",
            "peak GiB",
            "loader workers to feed it: JPEG / cache",
        ],
        rows,
    )
    compiled = [t["compiled"] for t in a["training"] if "lightning_img_s" in (t.get("compiled") or {})]
    if compiled:
        lines += [
            f"torch.compile: `model.compile=true`; its first fit (compilation included) took "
            f"{', '.join(str(c['first_fit_s']) for c in compiled)} s, not counted in its img/s.",
            "",
        ]
    lines += [
        f"### Loader workers per {target:,} img/s",
        "",
        "One worker process (one intra-op thread, as in a `DataLoader` worker) on the generated CelebA folder: "
        "JPEG decode + centre crop + resize + flip + collate (`CelebAImages`), and the same items read from the "
        "pre-decoded cache (`data.cache`, flip per read), interleaved batch by batch; the output is the uint8 batch "
        f"(the float conversion runs on the device). Workers needed = {target:,} / one worker's img/s, one core each.",
        "",
    ]
    lines += _table(
        [
            "input",
            "one worker, JPEG img/s",
            f"workers per {target:,} img/s",
            "one worker, cache img/s",
            f"workers per {target:,} img/s (cache)",
            "cache build s",
        ],
        [
            [
                f"{e['image_size']}x{e['image_size']}",
                _n(e["jpeg_img_s"]),
                _n(e[f"jpeg_workers_per_{target}"], 1),
                _n(e["cached_img_s"]),
                _n(e[f"cached_workers_per_{target}"], 1),
                e["cache_build_s"],
            ]
            for e in a["loader"]
        ],
    )
    s = a.get("serving")
    if s:
        pre, device_row = s["preprocess"], s["rows"][0]
        top = max(device_row["batches"], key=int)
        heading = f"TorchScript on {'the GPU' if on_gpu else 'the CPU'}"
        if not s.get("onnx_skipped"):
            heading = (
                "TorchScript on the GPU, fp32 and int8 ONNX on the host CPU"
                if on_gpu
                else "TorchScript, fp32 and int8 ONNX on the CPU"
            )
        lines += [
            f"### Serving: {heading}",
            "",
            f"A random {s['backbone']} at {s['image_size'][0]}x{s['image_size'][1]} exported by the project's export "
            f"(`{s['export']}`, {s['export_s']} s"
            + ("" if s.get("onnx_skipped") else "; int8 calibrated on the generated folder's validation images")
            + "), each "
            "artefact run by the service's `Predictor` on uint8 batches: copy to the device, float conversion, model, "
            "probabilities back to the host; img/s = batch / p50 latency. onnxruntime is its CPU wheel, so on a GPU "
            "machine the ONNX rows run on the host CPU. The weights are random: these are speed figures, not the "
            "int8 artefact's accuracy cost.",
            "",
        ]
        if s.get("onnx_skipped"):
            lines += [f"**ONNX rows skipped:** {s['onnx_skipped']}.", ""]
        lines += _table(
            ["runtime", "precision", "device", "batch", "p50 ms", "p99 ms", "img/s"],
            [
                [
                    row["runtime"],
                    row["precision"],
                    row["device"] + (" (host)" if row["host_cpu"] else ""),
                    b,
                    _n(e["p50_ms"], 2),
                    _n(e["p99_ms"], 2),
                    _n(e["img_s"]),
                ]
                for row in s["rows"]
                for b, e in row["batches"].items()
            ],
        )
        if "int8_vs_fp32_onnx" in s:
            lines += [f"int8 / fp32 ONNX img/s at batch {top}: **{_n(s['int8_vs_fp32_onnx'], 2)}x**.", ""]
        lines += [
            f"Host CPU per image of the service's preprocessing (`load_and_preprocess`: decode, crop, resize; one "
            f"thread, {pre['images']} JPEGs of {_n(pre['image_bytes_mean'])} bytes on average): "
            f"**{_n(pre['cpu_ms_per_image'], 2)} ms**, so feeding TorchScript's batch-{top} rate on {s['device']} of "
            f"{_n(device_row['batches'][top]['img_s'])} img/s takes **{_n(s['cores_to_feed'], 1)} cores** of "
            "preprocessing alone (before HTTP, parsing and JSON).",
            "",
        ]
    return lines


#: What was changed for speed and what it gave, measured when it was made (same-run, interleaved comparisons on
#: this 2-core machine while it was shared); kept here so that the generated report carries it.
SPEED_WORK = [
    "**Data path.** One image rule (`faceattr/preprocess.py`: simplejpeg's libjpeg-turbo, then the crop and a "
    "Pillow resize) for training, export's calibration and the service. With `data.jpeg_scaling` (on by default; "
    "the model's contract records it, so the service decodes uploads the same way) a JPEG is decoded at 1/2, 1/4 or "
    "1/8 scale by libjpeg's DCT scaling wherever the crop stays at least the input size; the augmentation calls "
    "torchvision's kernels directly on a plain image tensor (`faceattr/data/transforms.py`, bit-identical to v2's "
    "dispatch, without its per-call input inspection); `data.cache` keeps the decoded splits memory-mapped. What "
    "each buys is a row of the Input pipeline table above (full-size decoding, reduced-scale decoding, the cache); "
    "`python scripts/bench.py --only data` measures them again. What is left is JPEG decoding itself.",
    "**Training loop.** Nothing to fix: Lightning's per-step cost (logging, hooks, closure) is within the "
    "repetition noise (`lightning_vs_raw_loop`, Training loop table).",
    "**Serving.** In place: the load generator sends pre-encoded requests on keep-alive connections "
    "(`benchmarks/http_load.py`: its CPU is the client column); `runner: inline` runs the model in each API worker "
    "behind its own greedy batching queue (`faceattr/serve/batching.py`: everything waiting when the model is "
    "free) instead of a second service reached by HTTP per image; httptools + uvloop for uvicorn and the access "
    "log off (`access_log: false`); one read per upload (`faceattr/serve/upload_guard.py`: one multipart parse in "
    "memory, no temporary file, no second validation; docs/serving.md, *One read per upload*, has the same-run "
    "measurement against BentoML's own parsing); a `malloc_trim` after large decodes (`faceattr/serve/heap.py`) "
    "instead of a process-wide `M_MMAP_THRESHOLD`, which made every model activation an mmap/munmap; ONNX Runtime "
    "by default (`format: auto`; export writes ONNX too; its thread pool does not spin); `api_workers: null` = one "
    "API worker per core, at most 4, with one model thread each; at most the worker's share of the cores + 1 "
    "uploads decoded at once (`decode_threads`) instead of anyio's 40 threads; BentoML's OpenTelemetry middleware "
    "kept off the prediction routes (`trace_predictions: false`, *Request cost* above); the int8 artefact on a CPU "
    "(`precision: auto`). Those that are serve settings (`format`, `precision`, `runner`, `api_workers`, "
    "`decode_threads`, `access_log`, `trace_predictions`) are measured without them by "
    "`python scripts/bench.py --only serving --serve-env FACEATTR_SERVE_<KEY>=<value>` (e.g. "
    "`FACEATTR_SERVE_FORMAT=torchscript`, `FACEATTR_SERVE_RUNNER=service`, `FACEATTR_SERVE_DECODE_THREADS=40`), "
    "to compare with this run's tables. What was tried and dropped: a wait for "
    "requests still being decoded before starting a batch (no measurable gain); a 1-thread TorchScript model per "
    "worker (its efficiency falls at the small batches each worker sees). What is left: the per-request work in "
    "BentoML's HTTP stack and middleware, which keeps `api_cpu_per_model_cpu_quickstart` above its target (*Where "
    "the CPU goes* above).",
]


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by scripts/bench.py (benchmarks/report.py); do not edit by hand. -->",
        "",
        f"Reproduce: `{results.get('command')}` (`--quick` for a shorter run). Every figure is the median of "
        "several repetitions after a warm-up; every ratio compares two figures measured in the same run, their "
        "repetitions interleaved (A B B A ...) so that background load hits both alike, and is the median of the "
        "per-repetition ratios (each pair ran back to back).",
        "",
    ]
    lines += _machine(results)
    if results.get("families") != ["accelerator"]:  # a --device run measures none of the ratios
        lines += ["## Headline ratios", ""] + _ratios(results)
    for family, error in (results.get("errors") or {}).items():
        lines += [f"**{family} failed:** `{error.strip().splitlines()[-1]}`", ""]
    if results.get("data"):
        lines += _data(results) + _starve(results)
    if results.get("training"):
        lines += _training(results)
    if results.get("inference"):
        lines += _inference(results)
    if results.get("serving"):
        lines += _serving(results)
    if results.get("serving_large"):
        lines += _serving(
            results,
            "serving_large",
            "### Serving a production-size model",
            "a production-size model (the README's `model=resnet50`, trained at `data.image_size=128`)",
        )
    if results.get("requests"):
        lines += _requests(results)
    if results.get("sizing"):
        lines += _sizing(results)
    lines += _memory(results)
    if results.get("accelerator"):
        lines += _accelerator(results)
    lines += ["## Speed work", ""] + [f"- {note}" for note in SPEED_WORK] + [""]
    return "\n".join(lines).rstrip() + "\n"
