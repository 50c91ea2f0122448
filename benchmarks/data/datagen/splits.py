"""Split bookkeeping: which sources go to which split, and how many clips each split gets."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

SPLITS = ("train", "validation", "test")
FRACTIONS = {"train": 0.70, "validation": 0.15, "test": 0.15}

T = TypeVar("T", bound=Hashable)


def split_counts(total: int) -> dict[str, int]:
    """Clips per split for ``total`` clips of one class: 15 % each for validation and test, the rest train."""
    if total < 3:
        raise ValueError(f"need at least 3 clips per class to fill three splits, got {total}")
    held_out = max(1, round(total * FRACTIONS["test"]))
    return {"train": total - 2 * held_out, "validation": held_out, "test": held_out}


def assign_groups(groups: Sequence[T], rng: np.random.Generator) -> dict[T, str]:
    """Shuffle ``groups`` and deal them to the splits in 70/15/15 proportion (each split gets >= 1)."""
    if len(groups) < 3:
        raise ValueError(f"need at least 3 groups to fill three splits, got {len(groups)}")
    order = [groups[i] for i in rng.permutation(len(groups))]
    held_out = max(1, round(len(order) * FRACTIONS["test"]))
    names = ["test"] * held_out + ["validation"] * held_out + ["train"] * (len(order) - 2 * held_out)
    return dict(zip(order, names, strict=True))


def group_by(items: Sequence[T], same: Callable[[T, T], bool]) -> list[list[T]]:
    """Connected components of the relation ``same`` (union-find), each in input order.

    Used to merge sources that are really one recording (two presets sharing a sample, two voice
    variants producing identical audio) so a split can never see the same sound as another.
    """
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if root(i) != root(j) and same(items[i], items[j]):
                parent[root(j)] = root(i)
    components: dict[int, list[T]] = {}
    for i, item in enumerate(items):
        components.setdefault(root(i), []).append(item)
    return list(components.values())


def cycle(items: Sequence[T], count: int, rng: np.random.Generator) -> list[T]:
    """``count`` items drawn as shuffled passes over ``items``: every item used equally often (+-1)."""
    if not items:
        raise ValueError("cannot draw from an empty list")
    out: list[T] = []
    while len(out) < count:
        out.extend(items[i] for i in rng.permutation(len(items)))
    return out[:count]
