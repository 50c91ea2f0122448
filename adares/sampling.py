"""Batches of items of similar length, so little of a padded batch is padding.

Merged features have a different number of frames per file; a batch padded to its longest item
wastes the rest. :class:`BucketBatchSampler` shuffles the items, sorts each pool of them by
length, cuts the pools into batches of at most ``max_frames`` padded frames and shuffles the
batches, all from a generator seeded by ``(seed, epoch)``: every item comes exactly once per
epoch, and each rank of a distributed run gets its own share of the batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from adares.errors import ParameterError

__all__ = ["BucketBatchSampler", "padding_ratio"]


def padding_ratio(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Share of the frames of padded batches that are padding.

    Parameters
    ----------
    lengths : array_like [shape=(N,)], int
        Frames of each item.
    batches : sequence of sequences of int
        Item indices of each batch.

    Returns
    -------
    float
        ``1 - real frames / padded frames`` (a batch holds ``len(batch) * longest`` padded frames).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for batch in batches:
        sizes = lengths[np.asarray(batch, dtype=np.int64)]
        real += int(sizes.sum())
        padded += len(sizes) * int(sizes.max()) if len(sizes) else 0
    return 1.0 - real / padded if padded else 0.0


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of item indices with similar lengths, at most ``max_frames`` padded frames each.

    Each epoch: the items are shuffled, cut into pools of ``pool_size`` batches' worth of items,
    each pool is sorted by length and cut greedily into batches whose item count times longest
    item stays within ``max_frames`` (an item longer than that is a batch of its own), and the
    batches are shuffled. When ``num_replicas > 1`` the batches are dealt to the ranks in turn,
    after splitting the largest ones until their number is a multiple of ``num_replicas`` (so
    every rank takes the same number of steps whenever there are enough items); together the
    ranks see every item exactly once. Equal ``seed`` and epoch give equal batches on every rank,
    so the ranks need not communicate.

    Parameters
    ----------
    lengths : array_like [shape=(N,)], int
        Frames of each item (e.g. :attr:`adares.data.FeatureDataset.lengths`).
    max_frames : int
        Most padded frames (batch size times longest item) in a batch.
    max_batch_size : int, optional
        Most items in a batch.
    seed : int
        Seeds the shuffles; call :meth:`set_epoch` before each epoch for a new order.
    shuffle : bool
        False keeps the items in length order and the batches in that order (evaluation).
    pool_size : int
        Batches' worth of items sorted together: larger pools pad less, smaller ones mix lengths
        more between epochs.
    num_replicas, rank : int
        Number of processes of a distributed run and this one's index (default: one process).

    Raises
    ------
    ParameterError
        If a length is below 1, ``max_frames`` or ``pool_size`` is below 1, or ``rank`` is not
        in ``[0, num_replicas)``.

    Examples
    --------
    >>> sampler = BucketBatchSampler(dataset.lengths, max_frames=20000, seed=0)  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)  # doctest: +SKIP
    >>> for epoch in range(epochs):  # doctest: +SKIP
    ...     sampler.set_epoch(epoch)
    ...     for batch in loader: ...
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        max_frames: int,
        max_batch_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        pool_size: int = 100,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ParameterError(f"lengths must be one number per item, got shape {self.lengths.shape}")
        if len(self.lengths) and int(self.lengths.min()) < 1:
            raise ParameterError("every length must be at least 1 frame")
        for name, value in (("max_frames", max_frames), ("pool_size", pool_size), ("num_replicas", num_replicas)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if max_batch_size is not None and (not isinstance(max_batch_size, int) or max_batch_size < 1):
            raise ParameterError(f"max_batch_size must be a positive integer or None, got {max_batch_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ParameterError(f"rank must lie in [0, num_replicas={num_replicas}), got {rank!r}")
        self.max_frames = max_frames
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.pool_size = pool_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._plan: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (0-based) from the next iteration on."""
        self.epoch = int(epoch)

    def _generator(self) -> np.random.Generator:
        digest = hashlib.sha256(f"adares-buckets:{self.seed}:{self.epoch}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        """Cut items sorted by length into batches within ``max_frames`` (and ``max_batch_size``)."""
        batches, start = [], 0
        lengths = self.lengths[order]
        cap = self.max_batch_size or len(order)
        while start < len(order):
            # Sorted lengths: a batch's last item is its longest, and no batch from ``start`` holds
            # more than max_frames // lengths[start] items, so only that window is looked at.
            window = lengths[start : start + min(cap, max(1, self.max_frames // int(lengths[start])))]
            fits = np.arange(1, len(window) + 1) * window <= self.max_frames
            size = len(window) if fits.all() else max(1, int(np.argmin(fits)))
            batches.append(order[start : start + size])
            start += size
        return batches

    def _all_batches(self) -> list[np.ndarray]:
        generator = self._generator()
        count = len(self.lengths)
        if not self.shuffle:
            return self._cut(np.argsort(self.lengths, kind="stable"))
        order = generator.permutation(count)
        typical = max(1, self.max_frames // max(1, int(np.median(self.lengths)) if count else 1))
        pool = self.pool_size * min(typical, self.max_batch_size or typical)
        batches: list[np.ndarray] = []
        for start in range(0, count, pool):
            chunk = order[start : start + pool]
            batches += self._cut(chunk[np.argsort(self.lengths[chunk], kind="stable")])
        return [batches[i] for i in generator.permutation(len(batches))]

    def _balance(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Split the largest batches until every rank gets the same number (while any can be split)."""
        while len(batches) % self.num_replicas:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            if len(batches[largest]) < 2:
                break
            batch = batches[largest]
            half = len(batch) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
        return batches

    def _batches(self) -> list[np.ndarray]:
        if self._plan is None or self._plan[0] != self.epoch:
            mine = self._balance(self._all_batches())[self.rank :: self.num_replicas]
            self._plan = (self.epoch, mine)
        return self._plan[1]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches of this rank in the current epoch."""
        return len(self._batches())

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_plan": None}
