"""The LightningModule: a timm backbone with one logit per attribute, BCE loss and torchmetrics metrics.

Labels stored as ``UNKNOWN_LABEL`` (faceattr/attributes.py) weigh nothing in the loss and are left out of every
metric; one attribute trains like forty. At test time the module also logs the calibration of its probabilities
(``test/ece``, ``test/brier``, ``test/ece/<Attribute>``: faceattr/reliability.py).

Contract of ``forward``: float images ``(N, 3, H, W)``, RGB in [0, 1]; returns logits ``(N, A)``. Normalization
lives in the module, so batches stay uint8 until they reach the device (``_unpack``), and exported models take
[0, 1] images.
Checkpoints carry every hyper-parameter needed to rebuild the model (backbone, attribute names, input size, crop,
normalization), so export needs nothing but the ``.ckpt``; :attr:`FaceAttrModule.contract` is the model's contract
(``faceattr/contract.py``) built from them, the one object export writes and serving reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.contract import FACE_ALIGNMENTS, ModelContract
from faceattr.model.backbone import create_backbone
from faceattr.model.metrics import CALIBRATION, MACRO, attribute_table, build_metrics, macro
from faceattr.model.rng import rng_states, set_rng_states
from faceattr.preprocess import RULE_VERSION, size_pair

STAGES = ("val", "test")
# State that older checkpoints kept in the state_dict and that is now elsewhere (dropped when loading them):
# the loss weights (rebuilt from the data) and the best validation AUROC (now faceattr/best_metric.py's state).
LEGACY_STATE_KEYS = ("criterion.pos_weight", "best_val_auroc")


class FaceAttrModule(L.LightningModule):
    """Multi-label face-attribute classifier.

    Args:
        backbone: a timm model name.
        attributes: attribute names, one output each, in order.
        image_size: input ``(height, width)`` (or an int) the model is trained at.
        crop: centre crop applied to the aligned 178x218 image before resizing (recorded for export and serving).
        jpeg_scaling: the training JPEGs were decoded at a reduced DCT scale (``data.jpeg_scaling``).
        preprocess_rule: the version of the image rule (faceattr/preprocess.py) the training images went through.
        face_alignment: how the training images were aligned (faceattr/contract.py ``FACE_ALIGNMENTS``): "celeba"
            (CelebA's aligned frame) or "detect" (faceattr's detector, ``data.align=detect``); part of the contract.
        mean, std: per-channel normalization applied inside ``forward``; ``None`` = the backbone's own (timm's
            ``pretrained_cfg``: ImageNet statistics for ResNets, 0.5/0.5 for ViTs).
        pretrained: start from timm's pretrained weights (needs the network), unless ``weights`` is given.
        weights: path of a local timm weights file to start from.
        drop_rate: dropout before the classifier.
        backbone_kwargs: extra keyword arguments of the timm model (e.g. ``img_size`` for ViTs).
        pos_weight: weight positives by (1 - rate) / rate of the training split, for rare attributes.
            Unknown labels (``UNKNOWN_LABEL``) are masked out of the loss: it is the mean over the known ones.
        channels_last: run the backbone in channels-last memory format.
        compile: ``torch.compile`` the backbone.
        optimizer: partial of a torch optimizer, called with the parameter groups.
        scheduler: partial of an LR scheduler, called with the optimizer and ``total_steps``; ``None`` = constant.
    """

    def __init__(
        self,
        backbone: str,
        attributes: Sequence[str],
        image_size: int | Sequence[int] = 64,
        crop: int | Sequence[int] | None = None,
        jpeg_scaling: bool = False,
        preprocess_rule: int = RULE_VERSION,
        face_alignment: str = "celeba",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        backbone_kwargs: dict | None = None,
        pos_weight: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ) -> None:
        super().__init__()
        if face_alignment not in FACE_ALIGNMENTS:
            raise ValueError(f"face_alignment {face_alignment!r}: expected one of {', '.join(FACE_ALIGNMENTS)}")
        net = create_backbone(backbone, len(attributes), pretrained, weights, drop_rate, dict(backbone_kwargs or {}))
        own = getattr(net, "pretrained_cfg", None) or {}
        mean = own.get("mean", (0.485, 0.456, 0.406)) if mean is None else mean
        std = own.get("std", (0.229, 0.224, 0.225)) if std is None else std
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "attributes": [str(name) for name in attributes],
                "image_size": list(size_pair(image_size)),
                "crop": None if crop is None else list(size_pair(crop)),
                "jpeg_scaling": bool(jpeg_scaling),
                # The image rule the training images went through (faceattr/preprocess.py): part of the contract.
                "preprocess_rule": int(preprocess_rule),
                "face_alignment": str(face_alignment),
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
                "pretrained": bool(pretrained),
                "weights": weights,
                "drop_rate": float(drop_rate),
                "backbone_kwargs": dict(backbone_kwargs or {}),
                "pos_weight": bool(pos_weight),
                "channels_last": bool(channels_last),
                "compile": bool(compile),
            }
        )
        self.attributes = list(self.hparams.attributes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = net
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(self.hparams.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.hparams.std).view(1, 3, 1, 1), persistent=False)
        # Loss weights of the positives (model.pos_weight=true), computed from the training split in setup(); not
        # part of the weights: a checkpoint holds only what the exported model needs.
        self.register_buffer("pos_weight", None, persistent=False)
        self.metrics = nn.ModuleDict({stage: build_metrics(len(self.attributes)) for stage in STAGES})
        # The last epoch's per-attribute figures of each stage ({attribute: {acc, bacc, auroc, ...}}) and macro figures.
        self.results: dict[str, dict] = {}

    @property
    def contract(self) -> ModelContract:
        """What this model carries for export and serving (faceattr/contract.py), from its hyper-parameters."""
        return ModelContract.from_hparams(self.hparams)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (images - self.mean) / self.std
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.net.compile()  # in place: state_dict keys stay those of the plain backbone

    def setup(self, stage: str) -> None:
        # Every stage: the validation and test losses weigh positives as training did.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.hparams.pos_weight and datamodule is not None:
            rate = datamodule.train_positive_rate.clamp(1e-3, 1 - 1e-3)
            self.pos_weight = ((1 - rate) / rate).to(self.device)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy over attributes, in float32 (also under bf16/16-mixed autocast): the mean over the
        known labels (an ``UNKNOWN_LABEL`` entry weighs 0, whatever the logit), positives weighted by ``pos_weight``."""
        known = (labels != UNKNOWN_LABEL).float()
        targets = (labels == 1).float()
        losses = F.binary_cross_entropy_with_logits(
            logits.float(), targets, weight=known, pos_weight=self.pos_weight, reduction="sum"
        )
        return losses / known.sum().clamp(min=1)

    @staticmethod
    def _unpack(batch) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """A loader batch (uint8 images on the device) -> float images in [0, 1], float labels, skipped count."""
        images, labels, skipped = batch
        if images is None:
            return None, None, skipped
        return images.float().div_(255), labels.float(), skipped

    def training_step(self, batch, batch_idx: int):
        images, labels, skipped = self._unpack(batch)
        if skipped:
            self.log("data/skipped_corrupt", float(skipped), on_step=False, on_epoch=True, reduce_fx="sum")
        if images is None:
            return None
        loss = self.loss(self(images), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def _eval_step(self, stage: str, batch) -> None:
        images, labels, skipped = self._unpack(batch)
        if skipped:
            self.log(f"{stage}/skipped_corrupt", float(skipped), on_step=False, on_epoch=True, reduce_fx="sum")
        if images is None:
            return
        logits = self(images).float()  # metrics and loss in float32, whatever the training precision
        self.log(
            f"{stage}/loss",
            self.loss(logits, labels),
            on_epoch=True,
            prog_bar=True,
            batch_size=len(images),
            sync_dist=True,
        )
        self.metrics[stage].update(torch.sigmoid(logits), labels.int())

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log the stage's macro and per-attribute figures; keep them in ``self.results[stage]``."""
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        macros = {name: macro(values[name]).float() for name in MACRO}
        self.log_dict({f"{stage}/{name}": value for name, value in macros.items()}, prog_bar=True)
        for name in ("auroc", "acc"):
            self.log_dict({f"{stage}/{name}/{a}": v.float() for a, v in zip(self.attributes, values[name]) if v == v})
        # Calibration (faceattr/reliability.py): in the results of both stages, logged for the tested model.
        calibration = {name: macro(values[name]).float() for name in CALIBRATION}
        if stage == "test":
            self.log_dict({f"{stage}/{name}": value for name, value in calibration.items()})
            self.log_dict({f"{stage}/ece/{a}": v.float() for a, v in zip(self.attributes, values["ece"]) if v == v})
        macros |= calibration
        self.results[stage] = {
            "macro": {name: float(value) for name, value in macros.items()} | {"num_images": int(values["num_images"])},
            "per_attribute": attribute_table(values, self.attributes),
        }

    def on_validation_epoch_end(self) -> None:
        # The best epoch so far (val/auroc_best) is faceattr/best_metric.py's, which train() always adds.
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Global RNG states, so a resumed run draws the same augmentations and shuffles it would have drawn.
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        state = checkpoint.get("state_dict", {})
        for key in LEGACY_STATE_KEYS:
            state.pop(key, None)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("FaceAttrModule needs an optimizer partial to train")
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        # No weight decay on biases, norm layers and what the backbone itself lists (timm's no_weight_decay():
        # a ViT's pos_embed and cls_token).
        no_decay = self.net.no_weight_decay() if hasattr(self.net, "no_weight_decay") else ()
        groups = param_groups_weight_decay(self.net, weight_decay, no_weight_decay_list=no_decay)
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
