"""Lightning's checkpoint plugin with an atomic save; every trainer config sets it (``conf/trainer/default.yaml``)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from faceattr.atomic import translated, write_bytes

#: A path that names a protocol (``s3://bucket/x.ckpt``, ``file://...``, ``simplecache::s3://...``), in fsspec's
#: URL syntax, which Lightning's own save goes through.
PROTOCOL = re.compile(r"::|://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with an atomic save on the checkpoint's own filesystem.

    Lightning serializes a checkpoint into memory, then writes it through an fsspec transaction whose temporary file
    lies in the system temp dir; when that is another filesystem the final move is a copy, and a full disk or a crash
    leaves a truncated checkpoint under its final name. Here the bytes go through :func:`faceattr.atomic.write_bytes`
    (a temporary file beside the checkpoint, fsync, rename), and a full disk is the one-line
    ``error: no space left on device writing ...``. Loading and removal (ModelCheckpoint's old top-k files, after the
    new one is saved) stay Lightning's; a path with a protocol (``s3://...``) keeps Lightning's save.

    Args:
        hint: the setting that writes elsewhere, for the disk-full message (default: ``hydra.run.dir=...`` in a run,
            ``hydra.sweep.dir=...`` in a sweep).
    """

    def __init__(self, hint: Optional[str] = None) -> None:
        super().__init__()
        self.hint = hint

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Optional[Any] = None
    ) -> None:
        if storage_options is not None or PROTOCOL.search(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        with translated(path, None, self.hint):
            path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getbuffer(), hint=self.hint)
