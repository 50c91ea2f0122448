"""Feed a folder written by ``adares extract`` to a torch training loop.

:class:`FeatureDataset` reads the folder's manifest (the latest successful record of each
source) and loads each feature file on access; :func:`collate` pads a list of items into a batch
with lengths and a padding mask, because merged features have a different number of frames per
file.
"""

from __future__ import annotations

import lzma
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from adares.errors import ParameterError
from adares.features import Features
from adares.store import MANIFEST_NAME, Manifest, read_features

__all__ = ["FeatureDataset", "collate"]

Labeller = Callable[[dict[str, Any]], Any]


_STRING_COLUMNS = ("source", "output", "id", "shard", "member")
"""Manifest fields an item keeps: where its features are and what it is called."""
_NUMBER_COLUMNS = ("output_frames", "fine_frames", "duration")


def _pack(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """An array as compressed bytes, integers in the narrowest type that holds them (for pickling)."""
    if array.dtype.kind in "iu" and array.size:
        low, high = int(array.min()), int(array.max())
        array = array.astype(np.result_type(np.min_scalar_type(low), np.min_scalar_type(high)))
    return array.dtype.str, array.shape, zlib.compress(np.ascontiguousarray(array).tobytes(), 6)


def _unpack(dtype: str, shape: tuple[int, ...], blob: bytes, *, like: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype=dtype).reshape(shape).astype(like)


class _StringTable:
    """Rows of strings as one UTF-8 buffer and offsets: no Python object per string.

    A row's strings lie next to each other (a source, then its output and id), so the
    compression of :meth:`__getstate__` finds each output and id as a near copy of its source.
    """

    def __init__(self, rows: Sequence[Sequence[str]], *, columns: int) -> None:
        encoded = [value.encode() for row in rows for value in row]
        self.columns = columns
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(value) for value in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._state: dict[str, Any] | None = None

    def get(self, row: int, column: int) -> str:
        cell = row * self.columns + column
        return self.buffer[self.offsets[cell] : self.offsets[cell + 1]].tobytes().decode()

    def __getstate__(self) -> dict[str, Any]:
        # LZMA's fastest preset shrinks paths far more than zlib (it finds the repeats across
        # rows); the table never changes, so it is compressed once however often it is pickled.
        if self._state is None:
            self._state = {
                "columns": self.columns,
                "sizes": _pack(np.diff(self.offsets)),
                "buffer": lzma.compress(self.buffer.tobytes(), preset=0),
            }
        return self._state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.columns = state["columns"]
        sizes = _unpack(*state["sizes"], like="int64")
        self.offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.buffer = np.frombuffer(lzma.decompress(state["buffer"]), dtype=np.uint8)
        self._state = state


class _Records(Sequence[dict[str, Any]]):
    """The items' manifest fields as dicts built on access (see :attr:`FeatureDataset.records`)."""

    def __init__(self, dataset: FeatureDataset) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._dataset.record(i) for i in range(*index.indices(len(self)))]
        return self._dataset.record(index)


class FeatureDataset(Dataset):
    """The feature files of an ``adares extract`` output folder, as a map-style torch dataset.

    Holds its items in columns (numpy arrays, and every string in one buffer), not a Python object
    per item: memory grows by tens of bytes per item, DataLoader workers started by fork share
    it untouched, and the dataset pickles compressed (a hundred thousand items in well under a
    megabyte) for workers started by spawn. Reads every layout ``adares extract`` writes (npz,
    HDF5, shards).

    Parameters
    ----------
    root : str or os.PathLike
        The output folder (holding ``manifest.jsonl``), or the manifest file itself.
    labels : mapping or callable, optional
        Label of each item: a mapping from the source path (relative to the extraction input,
        as in the manifest) to a label, or a function of the manifest record. Items whose source
        the mapping lacks are left out. Labels that are strings are mapped to class indices
        (``classes`` lists them, sorted).

    Raises
    ------
    ParameterError
        If there is no manifest or it lists no successful file.

    Examples
    --------
    >>> dataset = FeatureDataset("features/", labels={"a/yes1.wav": "yes"})  # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=collate)  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], *, labels: Mapping[str, Any] | Labeller | None = None) -> None:
        path = Path(root)
        manifest = path if path.is_file() else path / MANIFEST_NAME
        if not manifest.is_file():
            raise ParameterError(f"no {MANIFEST_NAME} at {path}: is this an `adares extract` output folder?")
        self.root = manifest.parent
        records = sorted(Manifest(manifest).done().values(), key=lambda r: r["source"])
        raw_labels: list[Any] = []
        if labels is not None:
            label_of: Labeller = labels if callable(labels) else (lambda r: labels.get(r["source"]))
            raw_labels = [label_of(r) for r in records]
            records = [r for r, label in zip(records, raw_labels, strict=True) if label is not None]
            raw_labels = [label for label in raw_labels if label is not None]
        if not records:
            raise ParameterError(
                f"{manifest} lists no successfully extracted file" + (" with a label" if labels else "")
            )
        self._present = tuple(name for name in _STRING_COLUMNS if any(name in r for r in records))
        self._strings = _StringTable(
            [[str(r.get(name) or "") for name in self._present] for r in records], columns=len(self._present)
        )
        self._numbers = {
            name: np.array([r.get(name, -1) for r in records], dtype=np.float64 if name == "duration" else np.int64)
            for name in _NUMBER_COLUMNS
            if any(name in r for r in records)
        }
        self.classes: list[str] | None = None
        self._labels: np.ndarray | None = None
        if labels is not None:
            if all(isinstance(label, str) for label in raw_labels):
                self.classes = sorted(set(raw_labels))
                index = {name: i for i, name in enumerate(self.classes)}
                raw_labels = [index[label] for label in raw_labels]
            self._labels = np.asarray(raw_labels)
        self._count = len(records)

    def __len__(self) -> int:
        return self._count

    @property
    def records(self) -> Sequence[dict[str, Any]]:
        """Each item's manifest fields (``source``, ``output`` or ``shard`` and ``member``, ``id``,
        frame counts, ``label``), as a sequence of dicts built on access."""
        return _Records(self)

    def record(self, index: int) -> dict[str, Any]:
        """Item ``index``'s manifest fields as a dict (see :attr:`records`)."""
        if not -self._count <= index < self._count:
            raise IndexError(f"item {index} of {self._count}")
        index %= self._count
        record: dict[str, Any] = {}
        for column, name in enumerate(self._present):
            value = self._strings.get(index, column)
            if value:
                record[name] = value
        for name, values in self._numbers.items():
            if values[index] >= 0:
                record[name] = values[index].item()
        if self._labels is not None:
            record["label"] = self._labels[index].item() if self._labels.dtype != object else self._labels[index]
        return record

    @property
    def lengths(self) -> np.ndarray:
        """Frames of each item [shape=(N,)], int64, from the manifest (what a batch sampler needs).

        Items whose record lacks ``output_frames`` (manifests of older versions) are read once.
        """
        lengths = self._numbers.get("output_frames")
        if lengths is None:
            lengths = self._numbers["output_frames"] = np.full(self._count, -1, dtype=np.int64)
        for index in np.flatnonzero(lengths < 0):
            lengths[index] = self.features(int(index)).num_frames
        return lengths

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_numbers"] = {name: _pack(values) for name, values in self._numbers.items()}
        if self._labels is not None and self._labels.dtype != object:
            state["_labels"] = _pack(self._labels)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        numbers = state.pop("_numbers")
        state["_numbers"] = {
            name: _unpack(*packed, like="float64" if name == "duration" else "int64")
            for name, packed in numbers.items()
        }
        if isinstance(state["_labels"], tuple):
            dtype = state["_labels"][0]
            state["_labels"] = _unpack(*state["_labels"], like="int64" if np.dtype(dtype).kind in "iu" else dtype)
        self.__dict__.update(state)

    def features(self, index: int) -> Features:
        """The :class:`Features` of item ``index``, in whichever layout it was written.

        Raises
        ------
        FeatureFileError
            If its file is missing or corrupt.
        """
        return read_features(self.root, self.record(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One item: ``mel`` [T', F] float32, ``spans`` [T', 2] int64, ``length``, ``id``, ``label``."""
        record = self.record(index)
        features = read_features(self.root, record)
        item = {
            "mel": torch.from_numpy(features.mel),
            "spans": torch.from_numpy(features.spans),
            "length": features.num_frames,
            "id": record.get("id", record["source"]),
        }
        if "label" in record:
            item["label"] = record["label"]
        return item


def collate(items: Sequence[dict[str, Any]], *, pad_value: float = 0.0) -> dict[str, Any]:
    """Pad items of different lengths into one batch.

    Parameters
    ----------
    items : sequence of dict
        Items of :class:`FeatureDataset`.
    pad_value : float
        Value of the ``mel`` padding frames.

    Returns
    -------
    dict
        ``mel`` [B, T'_max, F] float32, ``spans`` [B, T'_max, 2] int64 (padding -1),
        ``lengths`` [B] int64, ``mask`` [B, T'_max] bool (True on real frames), ``ids`` (list),
        and ``labels`` [B] when the items have labels.
    """
    if not items:
        raise ParameterError("cannot collate an empty list of items")
    lengths = torch.tensor([int(item["length"]) for item in items], dtype=torch.int64)
    longest, mels = int(lengths.max()), items[0]["mel"].shape[-1]
    mel = torch.full((len(items), longest, mels), float(pad_value), dtype=torch.float32)
    spans = torch.full((len(items), longest, 2), -1, dtype=torch.int64)
    for row, item in enumerate(items):
        count = int(item["length"])
        mel[row, :count] = item["mel"]
        spans[row, :count] = item["spans"]
    batch: dict[str, Any] = {
        "mel": mel,
        "spans": spans,
        "lengths": lengths,
        "mask": torch.arange(longest)[None, :] < lengths[:, None],
        "ids": [item["id"] for item in items],
    }
    if all("label" in item for item in items):
        batch["labels"] = torch.as_tensor(np.array([item["label"] for item in items]))
    return batch
