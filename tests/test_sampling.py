"""Tests of the length-bucketing batch sampler: coverage per epoch and rank, limits, seeding, padding."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from adares.errors import ParameterError
from adares.sampling import BucketBatchSampler, padding_ratio


def synthetic_lengths(count: int, *, seed: int = 0) -> np.ndarray:
    """Frame counts of clips from about 0.5 s to a minute at a 10 ms hop (log-normal, like real corpora)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=6.0, sigma=0.8, size=count), 50, 6000).astype(np.int64)


@pytest.mark.parametrize("max_batch_size", [None, 7])
def test_every_item_exactly_once_per_epoch_across_two_ranks(max_batch_size):
    lengths = synthetic_lengths(2001)
    seen_by_epoch = []
    for epoch in range(3):
        per_rank = []
        for rank in range(2):
            sampler = BucketBatchSampler(
                lengths, max_frames=8000, max_batch_size=max_batch_size, seed=5, num_replicas=2, rank=rank
            )
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(sampler) == len(per_rank[-1])
        assert len(per_rank[0]) == len(per_rank[1])  # the ranks step together
        items = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(items) == list(range(len(lengths)))
        assert not set(i for b in per_rank[0] for i in b) & set(i for b in per_rank[1] for i in b)
        for batch in per_rank[0] + per_rank[1]:
            assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 8000
            assert max_batch_size is None or len(batch) <= max_batch_size
        seen_by_epoch.append(per_rank[0])
    assert seen_by_epoch[0] != seen_by_epoch[1]  # a new order each epoch


def test_same_seed_same_batches_and_other_seed_differs():
    lengths = synthetic_lengths(500)
    first = list(BucketBatchSampler(lengths, max_frames=5000, seed=1))
    assert first == list(BucketBatchSampler(lengths, max_frames=5000, seed=1))
    assert first != list(BucketBatchSampler(lengths, max_frames=5000, seed=2))
    sampler = BucketBatchSampler(lengths, max_frames=5000, seed=1)
    sampler.set_epoch(3)
    assert list(pickle.loads(pickle.dumps(sampler))) == list(sampler)


def test_long_items_get_a_batch_of_their_own_and_unshuffled_is_sorted():
    lengths = np.array([10, 500, 20, 30, 10])
    batches = list(BucketBatchSampler(lengths, max_frames=60, shuffle=False))
    assert batches == [[0, 4, 2], [3], [1]]
    assert padding_ratio(lengths, batches) == pytest.approx(1 - 570 / (60 + 30 + 500))


def test_uneven_batches_are_split_so_ranks_take_equal_steps():
    lengths = np.full(9, 10)
    ranks = [list(BucketBatchSampler(lengths, max_frames=30, num_replicas=2, rank=r, seed=0)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert sorted(i for batches in ranks for b in batches for i in b) == list(range(9))


def test_bucketing_pads_far_less_than_random_batching():
    lengths = synthetic_lengths(100_000)
    sampler = BucketBatchSampler(lengths, max_frames=40_000, seed=0)
    bucketed = list(sampler)
    assert sorted(i for b in bucketed for i in b) == list(range(len(lengths)))
    # Random batching with the same mean batch size.
    size = round(len(lengths) / len(bucketed))
    order = np.random.default_rng(0).permutation(len(lengths))
    random = [order[i : i + size] for i in range(0, len(order), size)]
    bucketed_ratio, random_ratio = padding_ratio(lengths, bucketed), padding_ratio(lengths, random)
    print(f"padding: bucketed {bucketed_ratio:.4f}, random {random_ratio:.4f}, mean batch {size}")
    assert bucketed_ratio < 0.05
    assert random_ratio > 0.5
    assert bucketed_ratio < random_ratio / 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lengths": [3, 0], "max_frames": 10}, "at least 1 frame"),
        ({"lengths": [3], "max_frames": 0}, "max_frames"),
        ({"lengths": [3], "max_frames": 10, "rank": 2, "num_replicas": 2}, "rank"),
        ({"lengths": [[3]], "max_frames": 10}, "one number per item"),
        ({"lengths": [3], "max_frames": 10, "max_batch_size": 0}, "max_batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    lengths = kwargs.pop("lengths")
    with pytest.raises(ParameterError, match=match):
        BucketBatchSampler(lengths, **kwargs)
