"""The model: a timm backbone in a LightningModule, its metrics and LR schedules."""

from faceattr.model.module import FaceAttrModule

__all__ = ["FaceAttrModule"]
