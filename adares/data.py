"""Feed a folder written by ``adares extract`` to a torch training loop.

:class:`FeatureDataset` reads the folder's manifest (the latest successful record of each
source) and loads each feature file on access; :func:`collate` pads a list of items into a batch
with lengths and a padding mask, because merged features have a different number of frames per
file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from adares.errors import ParameterError
from adares.features import Features, load_features
from adares.store import MANIFEST_NAME, Manifest

__all__ = ["FeatureDataset", "collate"]

Labeller = Callable[[dict[str, Any]], Any]


class FeatureDataset(Dataset):
    """The feature files of an ``adares extract`` output folder, as a map-style torch dataset.

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
        records = list(Manifest(manifest).done().values())
        if labels is not None:
            label_of: Labeller = labels if callable(labels) else (lambda r: labels.get(r["source"]))
            records = [r | {"label": label_of(r)} for r in records]
            records = [r for r in records if r["label"] is not None]
        if not records:
            raise ParameterError(
                f"{manifest} lists no successfully extracted file" + (" with a label" if labels else "")
            )
        self.records: list[dict[str, Any]] = sorted(records, key=lambda r: r["source"])
        raw_labels = [r.get("label") for r in self.records]
        self.classes: list[str] | None = None
        if labels is not None and all(isinstance(label, str) for label in raw_labels):
            self.classes = sorted(set(raw_labels))
            index = {name: i for i, name in enumerate(self.classes)}
            for record in self.records:
                record["label"] = index[record["label"]]

    def __len__(self) -> int:
        return len(self.records)

    def features(self, index: int) -> Features:
        """The :class:`Features` of item ``index``, in whichever layout it was written.

        Raises
        ------
        FeatureFileError
            If its file is missing or corrupt.
        """
        return load_features(self.root / self.records[index]["output"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One item: ``mel`` [T', F] float32, ``spans`` [T', 2] int64, ``length``, ``id``, ``label``."""
        features = self.features(index)
        record = self.records[index]
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
