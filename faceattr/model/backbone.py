"""Backbones from timm's factory: any timm model name, random init, timm's pretrained weights, or a local file."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch.nn as nn

from faceattr.errors import UserError


def create_backbone(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: str | None = None,
    drop_rate: float = 0.0,
    backbone_kwargs: dict | None = None,
) -> nn.Module:
    """Build timm model ``name`` with a ``num_classes``-way head.

    ``backbone_kwargs`` go to the model's constructor (e.g. ``img_size`` for ViTs). ``weights`` (a local
    ``.pth``/``.bin``/``.safetensors`` file of timm weights for ``name``) takes precedence over ``pretrained``
    (timm's registry, which needs the network). timm drops a classifier whose size differs.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"model.backbone={name} is not a timm model name{hint}; see timm.list_models()")
    kwargs = dict(backbone_kwargs or {}, num_classes=num_classes, drop_rate=drop_rate)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"model.weights={weights}: no such file; give the path of a local timm weights file")
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise UserError(f"model.weights={weights} does not fit backbone {name}: {first}") from None
    if pretrained:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(
                f"could not get pretrained weights for {name} from timm's registry ({first}); "
                "set model.weights=/path/to/weights or model.pretrained=false"
            ) from None
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise UserError(f"model.backbone_kwargs={backbone_kwargs} do not fit backbone {name}: {exc}") from None
