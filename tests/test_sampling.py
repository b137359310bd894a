"""The group-balanced sampler: equal draws per combination, unknown labels never drawn, reproducible, DDP-sharded."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from faceattr.data.sampling import group_balanced_sampler
from faceattr.errors import UserError


def _labels() -> torch.Tensor:
    """2000 items over 2 binary group attributes, with one tiny combination (20 items) and 40 unknown labels."""
    rows = [[1, 1]] * 20 + [[0, 1]] * 900 + [[1, 0]] * 380 + [[0, 0]] * 660 + [[255, 0]] * 30 + [[1, 255]] * 10
    return torch.tensor(rows, dtype=torch.uint8)


def test_each_combination_is_drawn_equally_often_and_unknowns_never():
    labels = _labels()
    sampler = group_balanced_sampler(labels, seed=3)
    drawn = torch.tensor(list(sampler))
    assert len(sampler) == len(drawn) == len(labels)
    assert (labels[drawn] != 255).all()  # unknown group labels weigh 0
    combos, counts = torch.unique(labels[drawn], dim=0, return_counts=True)
    assert combos.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # 2000 draws over 4 combinations: 500 each, binomial sd ~19; the tiny combination is drawn ~25x its share.
    assert all(abs(int(c) - 500) < 100 for c in counts), counts


def test_draws_depend_on_seed_and_epoch_only():
    labels = _labels()
    a, b = group_balanced_sampler(labels, seed=7), group_balanced_sampler(labels, seed=7)
    assert list(a) == list(b) == list(a)  # reproducible, and iterating again gives the same epoch
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b)
    b.set_epoch(1)
    assert list(b) == epoch1  # a resumed run draws the same epoch
    assert list(group_balanced_sampler(labels, seed=8)) != list(b)


def test_distributed_wrapper_shards_the_same_sequence():
    """What Lightning does with a custom sampler under DDP (use_distributed_sampler=True): each rank wraps its own
    copy in DistributedSamplerWrapper; the ranks' slices together are the one balanced sequence."""
    labels = _labels()
    shards = []
    for rank in (0, 1):
        wrapper = DistributedSamplerWrapper(group_balanced_sampler(labels, seed=5), num_replicas=2, rank=rank)
        wrapper.set_epoch(2)  # forwarded to our sampler: the shards below are epoch 2's draws
        shards.append(list(wrapper))
    assert len(shards[0]) == len(shards[1]) == len(labels) // 2
    reference = group_balanced_sampler(labels, seed=5)
    reference.set_epoch(2)
    assert sorted(shards[0] + shards[1]) == sorted(reference)


def test_all_unknown_group_labels_is_a_user_error():
    with pytest.raises(UserError, match="unknown label for a group attribute"):
        group_balanced_sampler(torch.full((5, 2), 255, dtype=torch.uint8), seed=0)
