"""Rebuild the FaceAttrModule of a checkpoint, for the readers that run the model itself (export, eval).

It stands above :mod:`faceattr.checkpoint` (the core's check that a file is a loadable faceattr checkpoint) because
it needs the model code; the core does not import the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from faceattr.checkpoint import read_checkpoint
from faceattr.errors import UserError
from faceattr.model.module import FaceAttrModule


def load_module(checkpoint: Path) -> FaceAttrModule:
    """The FaceAttrModule of ``checkpoint`` in eval mode on the CPU, rebuilt from the checkpoint alone.

    Loaded with ``weights_only=True`` (no pickled code runs; see :func:`faceattr.checkpoint.read_checkpoint`);
    pretrained/weights are switched off so nothing is downloaded or read besides the checkpoint. A checkpoint that
    does not record its image rule was trained before the rule was recorded: on its first version.
    """
    hparams = read_checkpoint(checkpoint)["hyper_parameters"]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            module = FaceAttrModule.load_from_checkpoint(
                checkpoint,
                map_location="cpu",
                weights_only=True,
                pretrained=False,
                weights=None,
                preprocess_rule=int(hparams.get("preprocess_rule", 1)),
            )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - many causes: weights of another architecture, missing keys
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = " ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines)
        raise UserError(
            f"cannot load {checkpoint} as a faceattr checkpoint: its weights do not fit a {hparams['backbone']} with "
            f"{len(hparams['attributes'])} attributes ({detail[:240] or type(exc).__name__})"
        ) from None
    return module.eval()
