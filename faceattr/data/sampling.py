"""Group-balanced sampling: each combination of the group attributes' values is drawn equally often.

Why: on CelebA, Blond_Hair is rare among men (about 1% of the training images are blond men), so an ordinary
(ERM) model learns "blond means female" and fails on its worst group. Idrissi et al. (CLeaR 2022) show that
simply sampling each (label x group) combination equally often is competitive with Group DRO. ``data.balance_groups``
turns this sampler on for the training loader.

Design:
- Weighted sampling with replacement, ``num_samples = N`` (an epoch has as many draws as the training split has
  images): each item weighs ``1 / size of its combination``, so each combination present carries the same total
  weight. A combination with no image cannot be drawn (it is logged).
- Items with an *unknown* group label (:data:`~faceattr.attributes.UNKNOWN_LABEL`) weigh 0: they belong to no
  combination, and counting them in one would unbalance it. Their number is logged; a split where every item has
  an unknown group label is a :class:`~faceattr.errors.UserError`.
- Reproducible and DDP-safe: the draws of an epoch are a pure function of ``(seed, epoch)``. Lightning calls
  ``set_epoch`` at each epoch's start; with ``use_distributed_sampler=True`` it wraps a custom sampler in
  ``DistributedSamplerWrapper``, which materialises the whole sequence on every rank (identical there, being
  seeded alike), hands each rank its own slice, and forwards ``set_epoch`` to this sampler. A resumed run draws
  the same sequence for the same epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.errors import UserError

log = logging.getLogger(__name__)

# Mixes the epoch into the seed so that (seed, epoch) pairs give distinct generator states.
_EPOCH_STRIDE = 1_000_003


class GroupBalancedSampler(Sampler[int]):
    """Draws ``len(weights)`` indices with replacement, with probability proportional to ``weights``.

    Args:
        weights: (N,) non-negative float64 weights (0 = never drawn).
        seed: seed of the draws; the draws of epoch ``e`` depend only on ``(seed, e)``.
    """

    def __init__(self, weights: torch.Tensor, seed: int) -> None:
        self.weights = weights.double()
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning (directly, or through ``DistributedSamplerWrapper``) at each epoch's start."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * _EPOCH_STRIDE + self.epoch) % 2**63)
        drawn = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        return iter(drawn.tolist())


def group_balanced_sampler(group_labels: torch.Tensor, seed: int) -> GroupBalancedSampler:
    """A sampler over the N training items whose draws see every combination of the G group values equally often.

    Args:
        group_labels: uint8 (N, G): each item's labels for the G group attributes (1, 0 or 255 = unknown).
        seed: the run's seed (the draws of each epoch are reproducible under it).
    """
    if group_labels.ndim != 2 or group_labels.shape[1] < 1:
        raise ValueError(f"group_labels must be (N, G) with G >= 1, got shape {tuple(group_labels.shape)}")
    labels = group_labels.to(torch.uint8)
    known = (labels != UNKNOWN_LABEL).all(dim=1)
    if not bool(known.any()):
        raise UserError(
            f"data.balance_groups: every one of the {len(labels)} training images has an unknown label for a "
            "group attribute; balance on attributes the training labels give"
        )
    combos, inverse, counts = torch.unique(labels[known], dim=0, return_inverse=True, return_counts=True)
    weights = torch.zeros(len(labels), dtype=torch.float64)
    weights[known] = 1.0 / counts[inverse].double()
    unknown = int((~known).sum())
    if unknown:
        log.info("group balancing: %d training images with an unknown group label are never drawn", unknown)
    absent = 2 ** labels.shape[1] - len(combos)
    if absent > 0:
        log.warning(
            "group balancing: %d of the %d group combinations have no training image and cannot be drawn",
            absent,
            2 ** labels.shape[1],
        )
    log.info(
        "group balancing over %d combinations (smallest %d, largest %d images)",
        len(combos),
        int(counts.min()),
        int(counts.max()),
    )
    return GroupBalancedSampler(weights, seed)
