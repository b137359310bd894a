"""Batch prediction: the exported model on a folder of photos, one CSV row per photo (or per face).

``predict_images(cfg)`` is what ``python predict.py`` runs (see ``conf/predict/predict.yaml``):

1. find the exported artefact (:func:`find_export`): a BentoML store tag; an export's own folder (``faceattr.json``
   beside the artefacts); or a run dir / ``.ckpt`` / sweep dir: the checkpoint export would pick, then the newest
   model of the store exported from that very checkpoint (the store's metadata records it), else the run's
   ``export/`` folder when it was exported from it;
2. list the photos (a folder, recursively, every file with an image extension; or a glob);
3. turn each photo into model inputs exactly as the service does (:class:`faceattr.serve.face_finding.FaceFinder`:
   ``load_faces`` with the service's limits, the detector with ``face=detect``; ``face=auto``, the default, is the
   mode the model was trained for, as the service's default: :func:`faceattr.serve.runtime.served_face`), in a pool
   of ``threads`` threads,
   while the main thread runs the artefact (:class:`faceattr.serve.runtime.Predictor`, as the service does) on
   batches of ``batch_size``;
4. write ``out`` (CSV, UTF-8, atomically: complete or absent; a column per attribute, named as the model's contract
   names it, whatever the training data called it) and ``<out stem>.skipped.csv`` (every photo not answered, with
   the reason: unreadable, not an image, corrupt, too large, no face), and return the summary the script prints.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from faceattr.atomic import atomic_path
from faceattr.config.check import check_config
from faceattr.errors import UserError
from faceattr.layout import EXPORT_DIR, METADATA_FILE
from faceattr.progress import Progress
from faceattr.serve.config import FACE_AUTO, default_serve_config
from faceattr.serve.face_finding import FaceFinder, FaceOptions
from faceattr.serve.images import ImageError, PreparedFace
from faceattr.serve.runtime import (
    ModelError,
    ModelInfo,
    Predictor,
    pick_device,
    read_model_info,
    resolve_model,
    served_face,
    served_format,
    store_location,
)

log = logging.getLogger(__name__)

#: Columns of the face a row is about (empty for the centre crop), after ``path`` and ``face`` (its index).
FACE_COLUMNS = ("face_x0", "face_y0", "face_x1", "face_y1", "face_score")
#: Characters that make ``images=`` a glob pattern rather than a folder.
GLOB_CHARS = "*?["
#: Between the names of the ``present`` column: attribute names from a data=folder CSV may hold spaces.
PRESENT_SEPARATOR = ";"


# --- 1. the exported artefact ---------------------------------------------------------------------------------------


def _no_export(model: str, checkpoint: Path, folder: Path) -> UserError:
    return UserError(
        f"model={model}: no export of {checkpoint} found (none in the BentoML model store {store_location()}, none in "
        f"{folder}): run `python export.py ckpt={model}` first"
    )


def _stored_exports_of(checkpoint: Path) -> list[str]:
    """Tags of the store's models exported from ``checkpoint``, newest first (``source.checkpoint`` metadata)."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    import bentoml

    wanted = str(checkpoint.resolve())
    found = []
    for model in bentoml.models.list():
        source = (model.info.metadata or {}).get("source") or {}
        if isinstance(source, dict) and source.get("checkpoint") == wanted:
            found.append((model.info.creation_time, str(model.tag)))
    return [tag for _, tag in sorted(found, reverse=True)]


def _export_folder(checkpoint: Path, run_dir: Path | None) -> Path:
    """Where export writes the artefacts of ``checkpoint`` by default: its run's ``export/`` (or the one beside a
    bare checkpoint)."""
    return (run_dir if run_dir is not None else checkpoint.parent) / EXPORT_DIR


def _exported_from(folder: Path, checkpoint: Path) -> bool:
    """Whether the export in ``folder`` (its ``faceattr.json``) was made from ``checkpoint``."""
    from faceattr.run_finder import read_json

    source = (read_json(folder / METADATA_FILE).get("source") or {}).get("checkpoint")
    return bool(source) and Path(source) == checkpoint.resolve()


def find_export(model: str) -> ModelInfo:
    """The exported artefact that ``model`` names (the forms of the module doc), or one UserError line."""
    model = str(model).strip()
    path = Path(model).expanduser()
    try:
        if path.is_dir() and (path / METADATA_FILE).is_file():  # an export's own folder
            return read_model_info(path, str(path))
        if "/" not in model and not model.endswith(".ckpt"):  # a store tag (or a folder of the working dir)
            try:
                return resolve_model(default_serve_config(model=model))
            except ModelError:
                if not path.exists():
                    raise
        if not path.exists():
            raise UserError(f"model={model}: no such file or folder")
        from faceattr.run_finder import resolve_checkpoint

        resolved = resolve_checkpoint(path)
        stored = _stored_exports_of(resolved.checkpoint)
        if stored:
            log.info("model:       %s, exported from %s", stored[0], resolved.checkpoint)
            return resolve_model(default_serve_config(model=stored[0]))
        folder = _export_folder(resolved.checkpoint, resolved.run_dir)
        if not _exported_from(folder, resolved.checkpoint):
            raise _no_export(model, resolved.checkpoint, folder)
        log.info("model:       %s, exported from %s", folder, resolved.checkpoint)
        return read_model_info(folder, str(folder))
    except ModelError as exc:
        raise UserError(str(exc)) from None


# --- 2. the photos --------------------------------------------------------------------------------------------------


def image_extensions() -> set[str]:
    """File name extensions Pillow knows as images (``.jpg``, ``.png``, ``.gif``, ...)."""
    from PIL import Image

    return set(Image.registered_extensions())


@dataclass
class Photos:
    """The photos to predict, how to show their paths, and how many other files were passed over."""

    paths: list[Path]
    root: Path | None  # a folder: paths are shown relative to it
    other_files: int = 0

    def shown(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if self.root is not None else str(path)


def list_photos(images: str) -> Photos:
    """A folder (every file below it with an image extension, in name order) or a glob pattern (every file it
    matches, ``**`` included); UserError when there is none."""
    pattern = str(images)
    if any(c in pattern for c in GLOB_CHARS):
        paths = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
        if not paths:
            raise UserError(f"images={pattern}: the pattern matches no file")
        return Photos(paths, None)
    root = Path(pattern).expanduser()
    if not root.is_dir():
        raise UserError(f"images={pattern}: no such folder (give a folder of photos or a glob such as 'dir/*.jpg')")
    extensions = image_extensions()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    paths = [p for p in files if p.suffix.lower() in extensions]
    if not paths:
        raise UserError(f"images={pattern}: no image files in the folder ({len(files)} other files)")
    return Photos(paths, root, len(files) - len(paths))


# --- 3.-4. predicting and writing -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened to the photos so far."""

    photos: int = 0  # answered
    faces: int = 0  # rows written
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (shown path, reason)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ImageError):
        return str(exc)
    return f"cannot read the file ({exc.strerror or type(exc).__name__})"


def _prepared_in_order(
    finder: FaceFinder, options: FaceOptions, paths: Sequence[Path], threads: int, window: int
) -> Iterator[tuple[Path, list[PreparedFace] | Exception]]:
    """Each photo's model inputs (or the error that stopped it), in order, prepared by ``threads`` threads with at
    most ``window`` photos in flight (ahead of the consumer, which meanwhile runs the model)."""

    def load(path: Path) -> list[PreparedFace]:
        return finder.prepare(path.read_bytes(), options)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="faceattr-decode") as pool:
        pending: collections.deque[tuple[Path, Future]] = collections.deque()
        upcoming = iter(paths)
        for path in upcoming:
            pending.append((path, pool.submit(load, path)))
            if len(pending) >= window:
                break
        while pending:
            path, future = pending.popleft()
            following = next(upcoming, None)
            if following is not None:
                pending.append((following, pool.submit(load, following)))
            try:
                yield path, future.result()
            except (ImageError, OSError) as exc:
                yield path, exc


def _header(info: ModelInfo) -> list[str]:
    return ["path", "face", *FACE_COLUMNS, *info.attributes, "present"]


def _rows(
    batch: list[tuple[str, int, PreparedFace]], probabilities: np.ndarray, info: ModelInfo, thresholds: np.ndarray
) -> Iterator[list[str]]:
    for (shown, index, prepared), row in zip(batch, probabilities):
        face = prepared.face
        if face is None:
            where = [""] * len(FACE_COLUMNS)
        else:
            where = [f"{float(v):.1f}" for v in face.box] + [f"{float(face.score):.4f}"]
        present = PRESENT_SEPARATOR.join(name for name, p, t in zip(info.attributes, row, thresholds) if p >= t)
        yield [shown, str(index), *where, *(f"{float(p):.6f}" for p in row), present]


def skipped_path(out: Path) -> Path:
    """``preds.csv`` -> ``preds.skipped.csv``: the photos not answered and why."""
    return out.with_name(f"{out.stem}.skipped.csv")


def _threads(value: Any) -> int:
    """Photos prepared at once: ``value``, or for null one per core (measured on 2 cores: the CPU time per photo is
    the same with 1 or 2 threads, and 2 keep the cores busier while the model's threads wait; docs/serving.md)."""
    if value is not None:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def predict_images(cfg: DictConfig) -> dict[str, Any]:
    """Predict every photo of ``cfg.images`` with ``cfg.model`` into ``cfg.out`` (the steps of the module doc);
    returns the summary."""
    check_config(cfg, "predict")  # one line for a bad value (conf/predict/predict.yaml)
    if cfg.all_faces and cfg.face == "center":
        raise UserError("all_faces=true needs face=detect (the centre crop is one answer per photo)")
    out = Path(str(cfg.out)).expanduser()
    if not out.parent.is_dir():
        raise UserError(f"out={cfg.out}: the folder {out.parent} does not exist")
    photos = list_photos(str(cfg.images))
    info = find_export(str(cfg.model))

    serve = default_serve_config(
        device=str(cfg.device),
        format=str(cfg.format),
        precision=str(cfg.precision),
        num_threads=cfg.num_threads,
        face=str(cfg.face),
    )
    serve = served_face(dataclasses.replace(serve, format=served_format(serve, info, pick_device(serve.device))), info)
    face = serve.face  # cfg.face, or for auto the model's own
    if cfg.all_faces and face != "detect":
        raise UserError(
            f"all_faces=true needs face=detect (face={cfg.face} is center for {info.tag}, which was trained on "
            "CelebA-aligned faces; the centre crop is one answer per photo)"
        )
    try:
        predictor = Predictor(info, serve)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    thresholds = info.thresholds_for(serve)
    threads = _threads(cfg.threads)
    finder = FaceFinder(
        info.image_size,
        info.crop,
        serve.decoding_limits(),  # the service's limits and decoding-memory bound
        template=info.face_template,
        jpeg_scaling=info.jpeg_scaling,
        no_face="center" if cfg.no_face == "center" else "reject",
        max_side=int(cfg.face_max_side),
        min_score=float(cfg.face_min_score),
    )
    options = FaceOptions(detect=face == "detect", all_faces=bool(cfg.all_faces))
    batch_size = int(cfg.batch_size)
    log.info(
        "predicting:  %d photos of %s with %s (%s on %s), face=%s, %d decoding threads, batches of %d",
        len(photos.paths),
        cfg.images,
        info.tag,
        predictor.artefact,  # the format, or onnx_int8 (the serve setting precision)
        predictor.device,
        face + (" (the model's own)" if cfg.face == FACE_AUTO else ""),
        threads,
        batch_size,
    )

    tally = Tally()
    progress = Progress(len(photos.paths), "predicting", unit="photos")
    started = time.perf_counter()
    try:
        with atomic_path(out) as temp, open(temp, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(_header(info))
            batch: list[tuple[str, int, PreparedFace]] = []

            def run(items: list[tuple[str, int, PreparedFace]]) -> None:
                probabilities = predictor(np.stack([item.pixels for _, _, item in items]))
                writer.writerows(_rows(items, probabilities, info, thresholds))
                tally.faces += len(items)

            window = 2 * batch_size + threads
            for path, result in _prepared_in_order(finder, options, photos.paths, threads, window):
                progress.advance(1)
                if isinstance(result, Exception):
                    tally.skipped.append((photos.shown(path), _reason(result)))
                    continue
                tally.photos += 1
                batch += [(photos.shown(path), index, item) for index, item in enumerate(result)]
                while len(batch) >= batch_size:
                    run(batch[:batch_size])
                    batch = batch[batch_size:]
            if batch:
                run(batch)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    skipped_file = skipped_path(out)
    with atomic_path(skipped_file) as temp, open(temp, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows(tally.skipped)
    return {
        "model": info.tag,
        "format": predictor.artefact,  # onnx, torchscript, or onnx_int8 (precision)
        "photos": len(photos.paths),
        "answered": tally.photos,
        "faces": tally.faces,
        "skipped": len(tally.skipped),
        "reasons": collections.Counter(reason for _, reason in tally.skipped).most_common(),
        "other_files": photos.other_files,
        "seconds": seconds,
        "images_per_s": len(photos.paths) / max(seconds, 1e-9),
        "out": str(out),
        "skipped_file": str(skipped_file),
        "face": face,
    }


def summary_lines(summary: dict[str, Any], max_reasons: int = 8) -> list[str]:
    """What predict.py prints when it is done."""
    lines = [
        f"model:    {summary['model']} ({summary['format']})",
        f"photos:   {summary['photos']} ({summary['answered']} answered, {summary['skipped']} skipped)"
        + (f"; {summary['other_files']} other files in the folder ignored" if summary["other_files"] else ""),
        f"rows:     {summary['faces']} ({'faces' if summary['face'] == 'detect' else 'centre crops'})",
        f"speed:    {summary['images_per_s']:.1f} img/s ({summary['seconds']:.1f} s)",
        f"written:  {summary['out']}",
    ]
    if summary["skipped"]:
        lines.append(f"skipped:  {summary['skipped_file']}, by reason:")
        reasons = summary["reasons"]
        lines += [f"  {count:>6}  {reason}" for reason, count in reasons[:max_reasons]]
        if len(reasons) > max_reasons:
            rest = sum(count for _, count in reasons[max_reasons:])
            lines.append(f"  {rest:>6}  (other reasons: see the file)")
    else:
        lines.append(f"skipped:  none ({summary['skipped_file']} lists none)")
    return lines
