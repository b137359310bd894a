"""CelebA's files: their names and formats, and filling one fresh folder with a generated data set.

The ``write_*`` functions fill a new, empty directory that nothing else reads; :mod:`faceattr.data.synthetic.writer`
builds that directory next to its destination, flushes it to disk and renames it into place once complete. The
generator marker is always the last file written.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.data.synthetic.attribute_model import RENDER_STREAM, assign_layout, sample_face
from faceattr.data.synthetic.renderer import render_face

GENERATOR = "faceattr.data.synthetic"
GENERATOR_VERSION = 1
IMAGE_DIR = "img_align_celeba"
MARKER = ".faceattr_synthetic.json"
LAYOUTS = ("original", "kaggle")

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
BBOX_FILE = "list_bbox_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
BBOX_COLUMNS = ("x_1", "y_1", "width", "height")
LANDMARK_COLUMNS = (
    "lefteye_x",
    "lefteye_y",
    "righteye_x",
    "righteye_y",
    "nose_x",
    "nose_y",
    "leftmouth_x",
    "leftmouth_y",
    "rightmouth_x",
    "rightmouth_y",
)

_CHUNK = 64  # images per worker task


def image_name(index: int) -> str:
    """CelebA file name of the 0-based ``index``: 0 -> ``000001.jpg``."""
    return f"{index + 1:06d}.jpg"


@dataclass(frozen=True)
class _Record:
    """What the annotation files say about one generated image."""

    labels: tuple[int, ...]  # -1 / 1 per attribute, official order
    bbox: tuple[int, int, int, int]
    landmarks: tuple[int, ...]


def _render_chunk(job: tuple[str, int, list[tuple[int, int]]]) -> list[_Record]:
    """Worker task: render and save the (index, identity) images of one chunk."""
    image_dir, seed, items = job
    records = []
    for index, identity in items:
        spec = sample_face(seed, index, identity)
        rng = np.random.default_rng([seed, RENDER_STREAM, index])
        face = render_face(spec, rng)
        face.image.save(os.path.join(image_dir, image_name(index)), quality=int(rng.integers(88, 94)))
        labels = tuple(1 if spec.attributes[name] else -1 for name in CELEBA_ATTRIBUTES)
        records.append(_Record(labels, face.bbox, face.landmarks))
    return records


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers instantly; spawn would re-import faceattr.data (torch, lightning: seconds per worker).
    # The workers only run numpy and PIL, so forking a parent that has torch threads is safe.
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _render_all(image_dir: Path, seed: int, identities: np.ndarray, workers: int | None) -> list[_Record]:
    items = list(enumerate(identities.tolist()))
    jobs = [(str(image_dir), seed, items[start : start + _CHUNK]) for start in range(0, len(items), _CHUNK)]
    processes = min(workers or os.cpu_count() or 1, len(jobs))
    if processes <= 1:
        chunks = [_render_chunk(job) for job in jobs]
    else:
        with _pool_context().Pool(processes) as pool:
            chunks = pool.map(_render_chunk, jobs, chunksize=1)
    return [record for chunk in chunks for record in chunk]


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write ``lines``, LF-terminated."""
    with path.open("w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _padded(name: str, values: Sequence[int], width: int) -> str:
    return name + "".join(f" {value:{width}d}" for value in values)


def _write_annotations(root: Path, records: list[_Record], partitions: np.ndarray, identities: np.ndarray) -> None:
    names = [image_name(i) for i in range(len(records))]
    count = str(len(records))
    # The real header line ends with a space; keep it so loaders are tested against that quirk.
    _write_lines(
        root / ATTR_FILE,
        [count, " ".join(CELEBA_ATTRIBUTES) + " "] + [_padded(name, r.labels, 2) for name, r in zip(names, records)],
    )
    _write_lines(root / PARTITION_FILE, [f"{name} {p}" for name, p in zip(names, partitions.tolist())])
    _write_lines(root / IDENTITY_FILE, [f"{name} {i}" for name, i in zip(names, identities.tolist())])
    _write_lines(
        root / BBOX_FILE,
        [count, " ".join(("image_id", *BBOX_COLUMNS))] + [_padded(name, r.bbox, 4) for name, r in zip(names, records)],
    )
    _write_lines(
        root / LANDMARKS_FILE,
        [count, " ".join(LANDMARK_COLUMNS)] + [_padded(name, r.landmarks, 4) for name, r in zip(names, records)],
    )


def marker(num_images: int, seed: int, layout: str) -> dict:
    """The marker of a complete generated folder: what it holds (compared whole before a folder is reused)."""
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "num_images": num_images,
        "seed": seed,
        "layout": layout,
    }


def read_marker(root: str | Path) -> dict | None:
    """The completion marker of a generated folder, or None (not generated, or interrupted)."""
    try:
        found = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("generator") == GENERATOR else None


def _write_marker(root: Path, content: dict) -> None:
    _write_lines(root / MARKER, [json.dumps(content, sort_keys=True)])


def write_original(directory: Path, num_images: int, seed: int, workers: int | None) -> None:
    """Fill the empty ``directory`` with ``num_images`` generated faces and all five annotation files, marker last.

    ``workers`` processes render the images (None: one per CPU); the output does not depend on it.
    """
    image_dir = directory / IMAGE_DIR
    image_dir.mkdir()
    partitions, identities = assign_layout(seed, num_images)
    records = _render_all(image_dir, seed, identities, workers)
    _write_annotations(directory, records, partitions, identities)
    _write_marker(directory, marker(num_images, seed, "original"))


def _read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_kaggle(src: Path, directory: Path) -> None:
    """Fill the empty ``directory`` with the original-layout CelebA folder ``src`` in Kaggle's layout.

    Writes ``list_attr_celeba.csv``, ``list_eval_partition.csv``, ``list_bbox_celeba.csv`` and
    ``list_landmarks_align_celeba.csv`` (Kaggle has no identity file) and hard-links (or copies) the images into
    ``img_align_celeba/img_align_celeba/``. A generator marker in ``src`` is carried over, written last.
    """
    attr = _read_lines(src / ATTR_FILE)
    partition = _read_lines(src / PARTITION_FILE)
    bbox = _read_lines(src / BBOX_FILE)
    landmarks = _read_lines(src / LANDMARKS_FILE)
    images = directory / IMAGE_DIR / IMAGE_DIR
    images.mkdir(parents=True)
    for name, _ in partition:
        _link_or_copy(src / IMAGE_DIR / name, images / name)
    _write_csv(directory / "list_attr_celeba.csv", ["image_id", *attr[1]], attr[2:])
    _write_csv(directory / "list_eval_partition.csv", ["image_id", "partition"], partition)
    _write_csv(directory / "list_bbox_celeba.csv", bbox[1], bbox[2:])
    _write_csv(directory / "list_landmarks_align_celeba.csv", ["image_id", *landmarks[1]], landmarks[2:])
    source_marker = read_marker(src)
    if source_marker is not None:
        _write_marker(directory, {**source_marker, "layout": "kaggle"})
