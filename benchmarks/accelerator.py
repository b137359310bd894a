"""Measurement for a machine with an accelerator: ``scripts/bench.py --device cuda`` (``--device cpu`` runs the
same code on the CPU, which is how it is tested).

Three questions, each answered with the project's own code:

* **Training.** img/s of the step ``train.py`` runs (``FaceAttrModule`` built from the model config, AdamW + the
  per-step cosine schedule of ``experiment=quickstart``, bf16 autocast, channels-last) for each backbone and input
  size, random init. Lightning ``Trainer.fit`` (as the project's trainer runs it, ``precision=bf16-mixed``) and the
  hand-written loop of :mod:`benchmarks.training`, interleaved. The batches are uint8, made once and pinned in host
  memory (what the datamodule's pinned loader hands over), and every step copies its batch to the device, so the
  loader is not what is measured. The device runs asynchronously: a repetition's figure is its timed steps over the
  time from the end of the last warm-up step to the end of the last step, the device synchronized at both ends.
  Optionally the same Lightning run with ``model.compile=true`` (``torch.compile`` of the backbone); a failure
  there is recorded, not raised.
* **Loader workers.** One worker's img/s (one process, one intra-op thread, as in a ``DataLoader`` worker) through
  the real pipeline on the generated CelebA folder, per input size: JPEG decode + crop + resize + flip + collate
  (``CelebAImages``), and the same items read from the pre-decoded cache (``data.cache``). The worker's output is
  the uint8 batch: the float conversion runs on the device. Workers needed for 10,000 img/s = 10,000 / that.
* **Serving.** The artefacts as ``export.py`` writes them (a random checkpoint of the production-size model,
  ``export=onnx export.quantize=int8 store=false``: TorchScript, fp32 ONNX and the int8 ONNX calibrated on the
  generated folder's validation images), each run by the service's ``Predictor`` on uint8 batches: TorchScript on
  the device, the two ONNX artefacts on the host CPU (onnxruntime is its CPU wheel: on a GPU machine they say so),
  with the int8 / fp32 ONNX ratio at the largest batch. Where this Python lacks onnx, onnxscript or onnxruntime (a
  GPU machine's image may), the export is ``export=torchscript`` and the ONNX rows are recorded as skipped, in one
  line. And the host CPU time per image of the service's preprocessing (``load_and_preprocess``: decode, crop,
  resize, one thread), which says how many cores it takes to feed the device's rate.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import subprocess
import tempfile
import time
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import REPO
from benchmarks.timing import interleaved, latency_summary, median, ratio, timed_calls
from faceattr.errors import UserError

#: Images per second a GPU training run would ask of its loader, for the "workers per" figures.
TARGET_IMG_S = 10_000
#: Lightning's precision of the measured training step (the project's trainer=gpu); the hand-written loop matches it.
PRECISION = "bf16-mixed"
#: For scale: NVIDIA's published ResNet-50 mixed-precision training throughput on one A100 at 224x224, as issue 13
#: quotes it (about 2,500 img/s). Published, not measured here.
PUBLISHED_REFERENCE = {
    "backbone": "resnet50",
    "image_size": 224,
    "img_s": 2500,
    "hardware": "one A100",
    "precision": "AMP (mixed precision)",
    "source": "NVIDIA Deep Learning Examples, ResNet-50 v1.5 for PyTorch",
}


@dataclass(frozen=True)
class AcceleratorSettings:
    """How much to measure in each mode of ``scripts/bench.py``."""

    backbones: tuple[str, ...]  # model config names (conf/model/)
    image_sizes: tuple[int, ...]
    batch_size: int
    warmup_steps: int
    steps: int  # timed steps per repetition
    repetitions: int
    distinct_batches: int  # uint8 batches made and pinned, cycled through
    compile: tuple[tuple[str, int], ...]  # (backbone, size) also trained with torch.compile under Lightning
    loader_images: int  # images through one worker per repetition
    loader_repetitions: int
    serve_model: tuple[str, ...]  # config overrides of the served model
    serve_batches: tuple[int, ...]
    serve_calls: int  # timed calls per batch size
    quantize_images: int  # validation images the int8 artefact is calibrated on (export's quantize.num_images)
    preprocess_images: int  # JPEGs through load_and_preprocess per repetition


MODES = {
    "full": AcceleratorSettings(
        backbones=("resnet18", "resnet50"),
        image_sizes=(128, 224),
        batch_size=256,
        warmup_steps=5,
        steps=20,
        repetitions=3,
        distinct_batches=4,
        compile=(("resnet50", 224),),
        loader_images=512,
        loader_repetitions=5,
        serve_model=("model=resnet50", "data.image_size=128"),
        serve_batches=(1, 32, 128),
        serve_calls=30,
        quantize_images=256,
        preprocess_images=64,
    ),
    "quick": AcceleratorSettings(
        backbones=("resnet18", "resnet50"),
        image_sizes=(128, 224),
        batch_size=256,
        warmup_steps=3,
        steps=10,
        repetitions=2,
        distinct_batches=2,
        compile=(),
        loader_images=256,
        loader_repetitions=3,
        serve_model=("model=resnet50", "data.image_size=128"),
        serve_batches=(1, 32, 128),
        serve_calls=15,
        quantize_images=128,
        preprocess_images=64,
    ),
    "tiny": AcceleratorSettings(
        backbones=("tiny_resnet",),
        image_sizes=(32,),
        batch_size=8,
        warmup_steps=1,
        steps=2,
        repetitions=1,
        distinct_batches=2,
        compile=(),
        loader_images=16,
        loader_repetitions=1,
        serve_model=("model=tiny_resnet", "data.image_size=32"),
        serve_batches=(1, 8),
        serve_calls=2,
        quantize_images=16,
        preprocess_images=8,
    ),
}


def check_device(device: str) -> torch.device:
    """``device`` (``cpu`` or ``cuda``), checked to be there: UserError (one line) for ``cuda`` without a GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        raise UserError(
            f"--device cuda: no CUDA device is visible to torch {torch.__version__} (built with CUDA {built}); "
            "run it on a machine with a GPU, or --device cpu to try the same code on the CPU"
        )
    return torch.device(device)


def device_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: the device, its memory, and the torch/CUDA/cuDNN versions."""
    from benchmarks.timing import _cpu_model

    info: dict[str, Any] = {
        "device": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "host_cpu": _cpu_model(),
        "host_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            driver=_nvidia_driver(),
        )
    else:
        info.update(name=info["host_cpu"], memory_gib=None, capability=None, threads=torch.get_num_threads())
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# --- training -------------------------------------------------------------------------------------------------------


def window_img_s(ends: list[float], warmup: int, batch_size: int) -> float:
    """img/s over the timed steps: from the end of the last warm-up step to the end of the last step (both taken
    after a device synchronization)."""
    timed = len(ends) - warmup
    if warmup < 1 or timed < 1:
        raise ValueError(f"need at least one warm-up and one timed step, got {len(ends)} steps and warmup {warmup}")
    return timed * batch_size / (ends[-1] - ends[warmup - 1])


def pinned_batches(settings: AcceleratorSettings, image_size: int, total: int, pin: bool) -> list:
    """``total`` training batches: ``settings.distinct_batches`` uint8 batches (pinned for a CUDA device), cycled."""
    from benchmarks.training import _batches

    distinct = _batches(settings.distinct_batches, settings.batch_size, [image_size, image_size], 40)
    if pin:
        distinct = [(images.pin_memory(), labels.pin_memory(), skipped) for images, labels, skipped in distinct]
    return [distinct[step % len(distinct)] for step in range(total)]


def training_config(backbone: str, image_size: int, batch_size: int, compile: bool = False):
    from benchmarks.common import quickstart_config

    return quickstart_config(
        f"model={backbone}",
        f"data.image_size={image_size}",
        f"data.batch_size={batch_size}",
        "model.channels_last=true",
        f"model.compile={'true' if compile else 'false'}",
    )


def _quiet():
    """Lightning's notices (stdout, stderr, warnings) are not the benchmark's output."""
    import contextlib

    from benchmarks.training import _quiet_fd

    stack = contextlib.ExitStack()
    for context in (
        _quiet_fd(1),
        _quiet_fd(2),
        warnings.catch_warnings(),
        redirect_stdout(io.StringIO()),
        redirect_stderr(io.StringIO()),
    ):
        stack.enter_context(context)
    warnings.simplefilter("ignore")
    return stack


def fit_img_s(
    model, loader, settings: AcceleratorSettings, device: torch.device, log_every: int, log_dir: str
) -> float:
    """One Lightning ``Trainer.fit`` as the project runs it (TensorBoard logger, LR monitor) on ``device``: img/s."""
    from benchmarks.training import lightning_fit

    total = settings.warmup_steps + settings.steps
    with _quiet():
        timer, _ = lightning_fit(
            model,
            loader,
            total,
            log_every,
            log_dir,
            False,
            "cuda" if device.type == "cuda" else "cpu",
            PRECISION,
            (settings.warmup_steps - 1, total - 1),
        )
    return window_img_s(timer.ends, settings.warmup_steps, settings.batch_size)


def train_one(
    settings: AcceleratorSettings, device: torch.device, backbone: str, image_size: int, log_dir: str
) -> dict[str, Any]:
    """Lightning and the hand-written loop, interleaved, for one backbone and size (and torch.compile if asked)."""
    from benchmarks.training import _model, raw_loop

    total = settings.warmup_steps + settings.steps
    cfg = training_config(backbone, image_size, settings.batch_size)
    log_every = int(cfg.trainer.get("log_every_n_steps", 50))
    batches = pinned_batches(settings, image_size, total, pin=device.type == "cuda")
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    raw_model, lightning_model = _model(cfg, total).to(device), _model(cfg, total)
    sync_after = (settings.warmup_steps - 1, total - 1)

    def raw() -> float:
        ends = raw_loop(raw_model, loader, total, log_every, device, PRECISION, sync_after)
        return window_img_s(ends, settings.warmup_steps, settings.batch_size)

    def lightning() -> float:
        return fit_img_s(lightning_model, loader, settings, device, log_every, log_dir)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reps = interleaved({"raw": raw, "lightning": lightning}, settings.repetitions, warmup=1)
    result: dict[str, Any] = {
        "backbone": str(cfg.model.backbone),
        "image_size": image_size,
        "batch_size": settings.batch_size,
        "precision": PRECISION,
        "channels_last": True,
        "num_parameters": raw_model.num_parameters,
        "raw_img_s": median(reps["raw"]),
        "lightning_img_s": median(reps["lightning"]),
        "raw_reps": [round(v, 1) for v in reps["raw"]],
        "lightning_reps": [round(v, 1) for v in reps["lightning"]],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }
    return result


def compiled_run(
    settings: AcceleratorSettings, device: torch.device, backbone: str, image_size: int, log_dir: str
) -> dict[str, Any]:
    """Lightning with ``model.compile=true``: the first fit compiles (its time is reported, its figure is not);
    a failure (no compiler, an unsupported op) is recorded, not raised."""
    from benchmarks.training import _model

    total = settings.warmup_steps + settings.steps
    cfg = training_config(backbone, image_size, settings.batch_size, compile=True)
    log_every = int(cfg.trainer.get("log_every_n_steps", 50))
    batches = pinned_batches(settings, image_size, total, pin=device.type == "cuda")
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    started = time.perf_counter()
    try:
        model = _model(cfg, total)
        fit_img_s(model, loader, settings, device, log_every, log_dir)
        first_fit_s = time.perf_counter() - started
        figures = [fit_img_s(model, loader, settings, device, log_every, log_dir) for _ in range(settings.repetitions)]
    except Exception as exc:  # noqa: BLE001 - torch.compile is optional: its failure must not lose the other figures
        return {"error": _last_line(exc)}
    return {
        "lightning_img_s": median(figures),
        "lightning_reps": [round(v, 1) for v in figures],
        "first_fit_s": round(first_fit_s, 1),
    }


# --- loader workers -------------------------------------------------------------------------------------------------


def uint8_batch(batch) -> torch.Tensor:
    """What a loader worker hands over: the uint8 image batch (the float conversion runs on the device)."""
    return batch[0]


def loader_one(settings: AcceleratorSettings, root: Path, data_cfg, image_size: int, cache_dir: Path) -> dict[str, Any]:
    """One worker's img/s at ``image_size``, decoding JPEGs and reading the pre-decoded cache, interleaved batch by
    batch (:func:`benchmarks.data.lockstep`), one intra-op thread."""
    from omegaconf import OmegaConf

    from benchmarks.data import _datamodule, _train_augment, lockstep
    from faceattr.data.celeba import collate_skipping_corrupt

    data_cfg = OmegaConf.merge(data_cfg, {"image_size": image_size})
    augment = _train_augment(data_cfg, True)
    decoded = _datamodule(root, data_cfg, augment)
    decoded.setup("fit")
    started = time.perf_counter()
    cached = _datamodule(root, data_cfg, augment, cache=cache_dir / f"size{image_size}")
    cached.setup("fit")  # builds the cache of the three splits in this process
    cache_build_s = time.perf_counter() - started
    count = min(settings.loader_images, len(decoded.splits["train"]))
    subset = list(range(count))

    def loader(dataset) -> DataLoader:
        return DataLoader(
            Subset(dataset, subset), batch_size=decoded.batch_size, num_workers=0, collate_fn=collate_skipping_corrupt
        )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker process = one intra-op thread, as inside DataLoader workers
    try:
        rates = lockstep(
            {
                "jpeg": (loader(decoded.splits["train"]), uint8_batch),
                "cached": (loader(cached.splits["train"]), uint8_batch),
            },
            settings.loader_repetitions,
        )
    finally:
        torch.set_num_threads(threads)
    jpeg, cache = median(rates["jpeg"]), median(rates["cached"])
    return {
        "image_size": image_size,
        "crop": list(decoded.crop) if decoded.crop else None,
        "batch_size": decoded.batch_size,
        "images_per_repetition": count,
        "jpeg_img_s": jpeg,
        "cached_img_s": cache,
        "jpeg_reps": [round(v, 1) for v in rates["jpeg"]],
        "cached_reps": [round(v, 1) for v in rates["cached"]],
        f"jpeg_workers_per_{TARGET_IMG_S}": TARGET_IMG_S / jpeg,
        f"cached_workers_per_{TARGET_IMG_S}": TARGET_IMG_S / cache,
        "cache_build_s": round(cache_build_s, 2),
    }


# --- serving --------------------------------------------------------------------------------------------------------


#: What the ONNX rows need: the ONNX exporter (onnx, onnxscript) and ONNX Runtime (int8 quantization, the runs).
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")


def onnx_missing() -> str | None:
    """Why this Python cannot make and run the ONNX artefacts (one line), or None when it can."""
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    return f"this Python lacks {', '.join(missing)}" if missing else None


def export_served(settings: AcceleratorSettings, out: Path, data_root: Path, onnx: bool) -> tuple[Path, float]:
    """A random checkpoint of the served model exported by the project's export (``store=false``: no BentoML store
    needed) into ``out/export-<formats>``; returns that folder and the export's seconds. ``onnx``: ``export=onnx
    export.quantize=int8`` (TorchScript, fp32 ONNX, int8 ONNX calibrated on ``data_root``'s validation images and
    judged on its test split), else ``export=torchscript``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from benchmarks.common import quickstart_config
    from benchmarks.served_model import INT8_EXPORT, random_checkpoint
    from faceattr.config.schemas import register_schemas
    from faceattr.export.pipeline import export

    checkpoint = random_checkpoint(quickstart_config(*settings.serve_model), out / "random.ckpt")
    folder = out / ("export-onnx" if onnx else "export-torchscript")
    overrides = [
        f"ckpt={checkpoint}",
        "store=false",
        f"output_dir={folder}",
        "calibration.num_workers=0",
        "parity.num_images=8",
    ]
    if onnx:
        # int8 (served_model.INT8_EXPORT: random weights lift the AUROC refusal) is calibrated on validation images
        # and judged on the test split, so test_metrics stays on; the generated folder's test split is small.
        overrides += [
            "export=onnx",
            *INT8_EXPORT,
            f"data_root={data_root}",
            f"calibration.max_images={settings.quantize_images}",
            f"quantize.num_images={settings.quantize_images}",
        ]
    else:
        overrides += ["export=torchscript", "test_metrics=false"]
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("export", overrides=overrides)
    started = time.perf_counter()
    level = logging.getLogger("faceattr").level
    logging.getLogger("faceattr").setLevel(logging.ERROR)  # export: its progress lines, its note on random images
    try:
        export(cfg)
    finally:
        logging.getLogger("faceattr").setLevel(level)
    return folder, time.perf_counter() - started


def preprocess_ms(images: list[Path], info, repetitions: int) -> dict[str, Any]:
    """Host CPU ms per image of the service's preprocessing (decode, crop, resize) on one thread, for the model
    ``info`` (its input size, crop and JPEG decoding)."""
    from faceattr.serve.images import load_and_preprocess

    encoded = [path.read_bytes() for path in images]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for data in encoded[:4]:  # warm-up
            load_and_preprocess(data, info.image_size, info.crop, jpeg_scaling=info.jpeg_scaling)
        per_image = []
        for _ in range(repetitions):
            started = time.process_time()
            for data in encoded:
                load_and_preprocess(data, info.image_size, info.crop, jpeg_scaling=info.jpeg_scaling)
            per_image.append((time.process_time() - started) * 1e3 / len(encoded))
    finally:
        torch.set_num_threads(threads)
    return {
        "cpu_ms_per_image": median(per_image),
        "reps": [round(v, 4) for v in per_image],
        "images": len(encoded),
        "image_bytes_mean": round(sum(map(len, encoded)) / len(encoded)),
    }


def served_rows(device: torch.device, onnx: bool) -> list[dict[str, Any]]:
    """The rows of the serving table: (runtime, precision, device, the Predictor's settings). TorchScript on the
    device; with ``onnx``, the fp32 and int8 ONNX artefacts on the CPU (onnxruntime is its CPU wheel, so on a GPU
    machine they run on the host)."""
    rows = [{"runtime": "TorchScript", "precision": "fp32", "device": device.type, "format": "torchscript"}]
    if onnx:
        rows += [
            {"runtime": "ONNX Runtime", "precision": precision, "device": "cpu", "format": "onnx"}
            for precision in ("fp32", "int8")
        ]
    for row in rows:
        row["host_cpu"] = row["device"] == "cpu" and device.type != "cpu"
        row["label"] = f"{row['runtime']} {row['precision']} on {row['device']}" + (
            " (the host: onnxruntime is the CPU wheel)" if row["host_cpu"] else ""
        )
    return rows


def time_row(row: dict[str, Any], info, settings: AcceleratorSettings) -> dict[str, Any]:
    """``row`` with its artefact run by the service's Predictor on uint8 batches: per batch size, p50/p99 latency
    and img/s."""
    from faceattr.serve.config import default_serve_config
    from faceattr.serve.runtime import Predictor

    config = default_serve_config(format=row["format"], precision=row["precision"], device=row["device"])
    predictor = Predictor(info, config)
    timed: dict[str, Any] = {**row, "artefact": predictor.artefact, "batches": {}}
    generator = torch.Generator().manual_seed(0)
    for batch in settings.serve_batches:
        x = torch.randint(0, 256, (batch, 3, *info.image_size), dtype=torch.uint8, generator=generator).numpy()
        seconds = timed_calls(lambda x=x: predictor(x), settings.serve_calls, warmup=5)
        summary = latency_summary(seconds, batch)
        timed["batches"][str(batch)] = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
    return timed


def serving(
    settings: AcceleratorSettings, device: torch.device, images: list[Path], tmp: Path, data_root: Path
) -> dict[str, Any]:
    """The exported artefacts run by the service's Predictor at each batch size (:func:`served_rows`), the int8 /
    fp32 ONNX ratio at the largest batch, and the host CPU cost of preprocessing one image; ``cores_to_feed`` = the
    device row's img/s at the largest batch x that cost."""
    from faceattr.serve.runtime import read_model_info

    onnx_skipped = onnx_missing()
    folder = None
    if onnx_skipped is None:
        try:
            folder, export_s = export_served(settings, tmp, data_root, onnx=True)
        except Exception as exc:  # noqa: BLE001 - the ONNX rows are optional on a GPU machine: TorchScript still runs
            onnx_skipped = f"export=onnx export.quantize=int8 failed: {_last_line(exc)}"
    if folder is None:
        folder, export_s = export_served(settings, tmp, data_root, onnx=False)
    info = read_model_info(folder, f"export:{folder.name}")
    top = str(max(settings.serve_batches))
    rows = [time_row(row, info, settings) for row in served_rows(device, onnx_skipped is None)]
    result: dict[str, Any] = {
        "backbone": info.contract.backbone,
        "image_size": list(info.image_size),
        "device": device.type,
        "export": "export=torchscript" if onnx_skipped else "export=onnx export.quantize=int8",
        "export_s": round(export_s, 1),
        "rows": rows,
        "onnx_skipped": onnx_skipped,
    }
    by_precision = {row["precision"]: row for row in rows if row["format"] == "onnx"}
    if by_precision:
        result["int8_vs_fp32_onnx"] = round(
            ratio(by_precision["int8"]["batches"][top]["img_s"], by_precision["fp32"]["batches"][top]["img_s"]), 3
        )
    pre = preprocess_ms(images[: settings.preprocess_images], info, 3)
    result["preprocess"] = pre
    result["cores_to_feed"] = round(rows[0]["batches"][top]["img_s"] * pre["cpu_ms_per_image"] / 1e3, 2)
    return result


def _serving_line(served: dict[str, Any]) -> str:
    top = str(max(int(b) for b in served["rows"][0]["batches"]))
    line = f"  serving {served['backbone']} at {served['image_size'][0]}: " + "; ".join(
        f"{row['label']} "
        + ", ".join(f"b{b} {e['img_s']:.0f} img/s ({e['p50_ms']:.1f} ms)" for b, e in row["batches"].items())
        for row in served["rows"]
    )
    if "int8_vs_fp32_onnx" in served:
        line += f"; int8 / fp32 ONNX at b{top} {served['int8_vs_fp32_onnx']:.2f}x"
    if served["onnx_skipped"]:
        line += f"; ONNX rows skipped: {served['onnx_skipped']}"
    return line + (
        f"; preprocessing {served['preprocess']['cpu_ms_per_image']:.2f} CPU ms/image -> "
        f"{served['cores_to_feed']:.1f} cores to feed b{top} on {served['device']}"
    )


# --- the family -----------------------------------------------------------------------------------------------------


def _last_line(exc: BaseException) -> str:
    lines = [line for line in "".join(traceback.format_exception_only(exc)).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _training_line(entry: dict[str, Any]) -> str:
    line = (
        f"  training {entry['backbone']} at {entry['image_size']}: Lightning {entry['lightning_img_s']:.0f} img/s, "
        f"raw loop {entry['raw_img_s']:.0f} img/s"
    )
    compiled = entry.get("compiled") or {}
    if "lightning_img_s" in compiled:
        line += f", Lightning with torch.compile {compiled['lightning_img_s']:.0f} img/s"
    elif "error" in compiled:
        line += f"; torch.compile failed: {compiled['error']}"
    return line


def run(mode: str, device_name: str, data_root: Path, data_cfg, images: list[Path], log=print) -> dict[str, Any]:
    """Every figure of the family on ``device_name`` (``check_device`` first). A part that fails (one training
    configuration, the loader, serving) is recorded under ``errors`` with its last line; the others still run."""
    settings = MODES[mode]
    device = check_device(device_name)
    result: dict[str, Any] = {
        "device": device_info(device),
        "settings": asdict(settings),
        "published_reference": PUBLISHED_REFERENCE,
        "target_img_s": TARGET_IMG_S,
        "training": [],
        "loader": [],
        "errors": {},
        "durations_s": {},
    }
    log(f"  on {result['device']['name']} ({device.type}, torch {torch.__version__}, CUDA {torch.version.cuda})")

    def part(name: str, measure) -> Any:
        started = time.perf_counter()
        try:
            return measure()
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others' figures
            result["errors"][name] = _last_line(exc)
            log(f"  {name} failed: {result['errors'][name]}")
            return None
        finally:
            result["durations_s"][name] = round(time.perf_counter() - started, 1)

    level = logging.getLogger("lightning.pytorch").level
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="faceattr-bench-accel-") as tmp:
            for backbone in settings.backbones:
                for size in settings.image_sizes:
                    entry = part(
                        f"training {backbone} {size}", lambda: train_one(settings, device, backbone, size, tmp)
                    )
                    if entry is None:
                        continue
                    if (backbone, size) in settings.compile:
                        entry["compiled"] = compiled_run(settings, device, backbone, size, tmp)
                    result["training"].append(entry)
                    log(_training_line(entry))
            for size in sorted(set(settings.image_sizes)):
                entry = part(
                    f"loader {size}", lambda: loader_one(settings, data_root, data_cfg, size, Path(tmp) / "cache")
                )
                if entry is not None:
                    result["loader"].append(entry)
                    log(
                        f"  one loader worker at {size}: {entry['jpeg_img_s']:.0f} img/s from JPEG "
                        f"({entry[f'jpeg_workers_per_{TARGET_IMG_S}']:.1f} workers per {TARGET_IMG_S:,} img/s), "
                        f"{entry['cached_img_s']:.0f} img/s from the cache "
                        f"({entry[f'cached_workers_per_{TARGET_IMG_S}']:.1f})"
                    )
            served = part("serving", lambda: serving(settings, device, images, Path(tmp), data_root))
            if served is not None:
                result["serving"] = served
                log(_serving_line(served))
    finally:
        logging.getLogger("lightning.pytorch").setLevel(level)
    return result
