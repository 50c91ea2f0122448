"""Hand an ``adares extract`` output folder to the toolkits trainers already read: lhotse, Kaldi, Hugging Face.

Every exporter reads the folder through :class:`~adares.data.FeatureDataset` (the latest
successful record of each source) and writes the arrays losslessly, so what comes back equals
:func:`~adares.features.load_features` of the originals bit for bit:

- :func:`to_lhotse`: a ``CutSet`` (``cuts.jsonl.gz``) whose cuts carry ``mel`` [T', F] and
  ``spans`` [T', 2] as custom arrays in one HDF5 file (``arrays.h5``, no lossy compression), and,
  for features written with ``--model none``, real lhotse ``Features`` at the fixed hop;
- :func:`to_kaldi`: ``feats.ark``/``feats.scp`` (float32 matrices) and ``spans.ark``/``spans.scp``
  (int32 vectors, Kaldi's integer archive) written by ``kaldiio``, plus ``utt2dur``;
- :func:`to_hf`: a Hugging Face ``datasets`` dataset, saved with ``save_to_disk`` or as parquet
  files, with variable-length ``Array2D`` columns.

Each writes into a temporary folder next to ``dest`` and renames it into place when complete, so
``dest`` never holds half an export. The packages are optional: ``pip install 'adares[export]'``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adares.atomic import TEMP_MARKER
from adares.data import FeatureDataset
from adares.errors import AdaresError, ParameterError
from adares.features import Features

__all__ = ["TARGETS", "HF_FORMATS", "ExportSummary", "export", "to_lhotse", "to_kaldi", "to_hf", "kaldi_id"]

TARGETS = ("lhotse", "kaldi", "hf")
HF_FORMATS = ("arrow", "parquet")
_INT32_MAX = 2**31 - 1
# Rows per Arrow record batch while the Hugging Face dataset is written: what the export holds in memory.
_HF_WRITER_BATCH = 64


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes
    ----------
    target : str
        ``"lhotse"``, ``"kaldi"`` or ``"hf"``.
    dest : str
        The folder written.
    items : int
        Number of items (cuts, utterances, rows) exported.
    files : tuple of str
        The files written, relative to ``dest``.
    """

    target: str
    dest: str
    items: int
    files: tuple[str, ...]

    def __str__(self) -> str:
        return f"exported {self.items} items to {self.dest} for {self.target} ({', '.join(self.files)})"


def export(
    out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, to: str, overwrite: bool = False, **options: Any
) -> ExportSummary:
    """Export an output folder to one of :data:`TARGETS`; the other keywords go to that exporter.

    Parameters
    ----------
    out_dir : str or os.PathLike
        An ``adares extract`` output folder (holding ``manifest.jsonl``).
    dest : str or os.PathLike
        The folder to create.
    to : str
        ``"lhotse"`` (:func:`to_lhotse`), ``"kaldi"`` (:func:`to_kaldi`) or ``"hf"`` (:func:`to_hf`).
    overwrite : bool
        Replace ``dest`` when it exists and is not empty.
    **options
        Keyword arguments of the exporter (``format`` for ``"hf"``).

    Returns
    -------
    ExportSummary

    Raises
    ------
    ParameterError
        If ``to`` is not a known target, or as the exporter raises.
    """
    exporters: dict[str, Callable[..., ExportSummary]] = {"lhotse": to_lhotse, "kaldi": to_kaldi, "hf": to_hf}
    if to not in exporters:
        raise ParameterError(f"unknown export target to={to!r} (--to): choose one of {', '.join(TARGETS)}")
    return exporters[to](out_dir, dest, overwrite=overwrite, **options)


def to_lhotse(
    out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False
) -> ExportSummary:
    """Write a lhotse ``CutSet`` whose cuts carry the features and their spans.

    ``dest/cuts.jsonl.gz`` holds one ``MonoCut`` per item, with id the item's id and, in
    ``custom``: ``mel`` and ``spans`` (lhotse ``Array`` manifests: ``cut.load_mel()`` gives
    [T', F] float32, ``cut.load_spans()`` [T', 2] int64 in samples at ``meta["sr"]``), ``source``
    and ``meta`` (every setting). The arrays are stored uncompressed in ``dest/arrays.h5``
    (``NumpyHdf5Writer``), named in the manifest by absolute path. The cut starts and ends where
    the spans do (a whole file: 0 to its length).

    Features written with ``--model none`` (``meta["compressor"] == "none"``) are uniform, so
    their cuts also get lhotse ``Features`` (frame shift ``hop_samples / sr``) and
    ``cut.load_features()`` returns the same [T, F] matrix. lhotse counts
    ``round(duration / frame_shift)`` frames, while a centred frame grid has
    ``1 + num_samples // hop_samples``; such a cut therefore lasts ``T * hop_samples / sr``, up
    to one hop longer than the audio (the spans still end at its last sample).

    Parameters
    ----------
    out_dir : str or os.PathLike
        An ``adares extract`` output folder.
    dest : str or os.PathLike
        The folder to create.
    overwrite : bool
        Replace ``dest`` when it exists and is not empty.

    Returns
    -------
    ExportSummary

    Raises
    ------
    ParameterError
        If lhotse or h5py is not installed, ``dest`` is not empty and ``overwrite`` is False,
        two items share an id, or ``out_dir`` is not an output folder.
    FeatureFileError
        If a feature file is missing or corrupt.
    """
    lhotse = _require("lhotse")
    _require("h5py")
    from lhotse import CutSet, MonoCut
    from lhotse.array import Array
    from lhotse.features.io import NumpyHdf5Writer

    dataset = _open(out_dir)
    ids = [_item_id(record) for record in dataset.records]
    _refuse_duplicates({item: item for item in ids}, what="lhotse cut id")
    final = Path(dest).resolve()
    arrays_path = str(final / "arrays.h5")
    with _staged(final, overwrite=overwrite) as stage:
        writer = NumpyHdf5Writer(stage / "arrays.h5", mode="w")
        with writer, CutSet.open_writer(stage / "cuts.jsonl.gz") as cuts:

            def stored(key: str, values: np.ndarray) -> Array:
                # The manifest names the file where it will be, not where it is being written.
                key = writer.write(key, values)
                return Array(writer.name, arrays_path, key, list(values.shape))

            for index, (record, features) in enumerate(_items(dataset)):
                mel = stored(f"mel/{index}", features.mel)
                first, last = _extent(features)
                lhotse_features = _lhotse_features(lhotse, features, mel, first=first, recording_id=ids[index])
                duration = (last - first) / features.sr
                cuts.write(
                    MonoCut(
                        id=ids[index],
                        start=first / features.sr,
                        duration=lhotse_features.duration if lhotse_features is not None else duration,
                        channel=0,
                        features=lhotse_features,
                        custom={
                            "mel": mel,
                            "spans": stored(f"spans/{index}", features.spans),
                            "source": record["source"],
                            "meta": features.meta,
                        },
                    )
                )
    return ExportSummary("lhotse", str(dest), len(ids), ("cuts.jsonl.gz", "arrays.h5"))


def _lhotse_features(lhotse: Any, features: Features, mel: Any, *, first: int, recording_id: str) -> Any:
    """lhotse ``Features`` over the stored ``mel`` for uniform (``--model none``) features, else None."""
    hop = int(features.meta.get("hop_samples") or 0)
    if features.meta.get("compressor") != "none" or hop <= 0 or features.num_frames == 0:
        return None
    return lhotse.Features(
        type="adares_log_mel",
        num_frames=features.num_frames,
        num_features=features.num_mels,
        frame_shift=hop / features.sr,
        sampling_rate=features.sr,
        start=first / features.sr,
        duration=features.num_frames * hop / features.sr,
        storage_type=mel.storage_type,
        storage_path=mel.storage_path,
        storage_key=mel.storage_key,
        recording_id=recording_id,
        channels=0,
    )


def kaldi_id(item_id: str) -> str:
    """The Kaldi utterance id of an item id: each whitespace or unprintable character becomes ``_``.

    Kaldi splits its table files on whitespace, so an id may hold anything else (``/`` too).

    Parameters
    ----------
    item_id : str
        The id in the output folder's manifest.

    Returns
    -------
    str

    Raises
    ------
    ParameterError
        If ``item_id`` is empty.
    """
    if not item_id:
        raise ParameterError("an empty id has no Kaldi utterance id")
    return "".join(char if char.isprintable() and not char.isspace() else "_" for char in item_id)


def to_kaldi(
    out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False
) -> ExportSummary:
    """Write Kaldi archives of the features and their spans, through ``kaldiio``.

    In ``dest``: ``feats.ark``/``feats.scp`` (each item's ``mel`` as a float32 matrix [T', F]),
    ``spans.ark``/``spans.scp`` (its spans as an int32 vector of ``2 T'`` values, start and end of
    each frame in samples: ``.reshape(-1, 2)`` gives [T', 2]) and ``utt2dur`` (seconds from the
    first span's start to the last span's end). Keys are :func:`kaldi_id` of the item ids, written
    in byte order as Kaldi's sorted tables expect; the ``.scp`` files name the archives by
    absolute path.

    Parameters
    ----------
    out_dir : str or os.PathLike
        An ``adares extract`` output folder.
    dest : str or os.PathLike
        The folder to create.
    overwrite : bool
        Replace ``dest`` when it exists and is not empty.

    Returns
    -------
    ExportSummary

    Raises
    ------
    ParameterError
        If kaldiio is not installed, ``dest`` is not empty and ``overwrite`` is False, two ids
        become the same Kaldi id, or a span lies beyond the int32 range (2**31 - 1 samples,
        37 hours at 16 kHz).
    FeatureFileError
        If a feature file is missing or corrupt.
    """
    kaldiio = _require("kaldiio")
    dataset = _open(out_dir)
    keys = {index: kaldi_id(_item_id(record)) for index, record in enumerate(dataset.records)}
    _refuse_duplicates({_item_id(dataset.records[i]): key for i, key in keys.items()}, what="Kaldi utterance id")
    order = sorted(keys, key=lambda index: keys[index].encode("utf-8"))
    final = Path(dest).resolve()
    with _staged(final, overwrite=overwrite) as stage:
        with (
            open(stage / "feats.ark", "wb") as feats_ark,
            open(stage / "feats.scp", "w", encoding="utf-8") as feats_scp,
            open(stage / "spans.ark", "wb") as spans_ark,
            open(stage / "spans.scp", "w", encoding="utf-8") as spans_scp,
            open(stage / "utt2dur", "w", encoding="utf-8") as utt2dur,
        ):
            for index in order:
                features = dataset.features(index)
                if features.num_frames and (features.spans.min() < 0 or features.spans.max() > _INT32_MAX):
                    raise ParameterError(
                        f"{dataset.records[index]['source']}: spans reach sample {features.spans.max()}, beyond "
                        "the int32 range of a Kaldi integer archive"
                    )
                kaldiio.save_ark(feats_ark, {keys[index]: features.mel}, scp=feats_scp)
                kaldiio.save_ark(spans_ark, {keys[index]: features.spans.astype(np.int32).reshape(-1)}, scp=spans_scp)
                first, last = _extent(features)
                utt2dur.write(f"{keys[index]} {(last - first) / features.sr:.6f}\n")
        for name in ("feats", "spans"):
            _repoint_scp(stage / f"{name}.scp", stage / f"{name}.ark", final / f"{name}.ark")
    return ExportSummary(
        "kaldi", str(dest), len(order), ("feats.ark", "feats.scp", "spans.ark", "spans.scp", "utt2dur")
    )


def _repoint_scp(scp: Path, written: Path, final: Path) -> None:
    """Make the ``key ark:offset`` lines of ``scp`` name the archive where it will be, not where it was written."""
    lines = []
    for line in scp.read_text(encoding="utf-8").splitlines():
        key, location = line.split(" ", 1)
        path, offset = location.rsplit(":", 1)
        if Path(path) != written:
            raise AdaresError(f"{scp}: kaldiio wrote {path!r} where {written} was expected")
        lines.append(f"{key} {final}:{offset}\n")
    scp.write_text("".join(lines), encoding="utf-8")


def to_hf(
    out_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    format: str = "arrow",
    overwrite: bool = False,
    max_shard_bytes: int = 500 << 20,
) -> ExportSummary:
    """Write a Hugging Face ``datasets`` dataset of the features, one row per item.

    Columns: ``id`` and ``source`` (strings), ``mel`` (``Array2D`` of shape ``(None, F)``,
    float32), ``spans`` (``Array2D`` ``(None, 2)``, int64, samples at the ``sr`` in ``meta``) and
    ``meta`` (every setting, a JSON string). Rows are generated one feature file at a time
    (``Dataset.from_generator``, a temporary Arrow cache next to ``dest``, removed afterwards), so
    memory stays bounded for any size of folder.

    Parameters
    ----------
    out_dir : str or os.PathLike
        An ``adares extract`` output folder.
    dest : str or os.PathLike
        The folder to create.
    format : str
        ``"arrow"``: ``Dataset.save_to_disk`` (read back with ``datasets.load_from_disk(dest)``);
        ``"parquet"``: ``dest/data/train-XXXXX-of-XXXXX.parquet`` (read back with
        ``datasets.load_dataset("parquet", data_dir=dest)``, or with pyarrow).
    overwrite : bool
        Replace ``dest`` when it exists and is not empty.
    max_shard_bytes : int
        Largest size of one Arrow or parquet file.

    Returns
    -------
    ExportSummary

    Raises
    ------
    ParameterError
        If datasets is not installed, ``format`` is unknown, ``dest`` is not empty and
        ``overwrite`` is False, or items have different numbers of mel bins.
    FeatureFileError
        If a feature file is missing or corrupt.
    """
    if format not in HF_FORMATS:
        raise ParameterError(f"unknown format={format!r} (--hf-format): choose one of {', '.join(HF_FORMATS)}")
    if max_shard_bytes <= 0:
        raise ParameterError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    datasets = _require("datasets")
    dataset = _open(out_dir)
    num_mels = dataset.features(0).num_mels
    schema = datasets.Features(
        {
            "id": datasets.Value("string"),
            "source": datasets.Value("string"),
            "mel": datasets.Array2D(shape=(None, num_mels), dtype="float32"),
            "spans": datasets.Array2D(shape=(None, 2), dtype="int64"),
            "meta": datasets.Value("string"),
        }
    )
    final = Path(dest).resolve()
    with _staged(final, overwrite=overwrite) as stage, _temporary_folder(final, "cache") as cache:
        try:
            rows = datasets.Dataset.from_generator(
                _hf_rows,
                features=schema,
                cache_dir=str(cache),
                gen_kwargs={"out_dir": os.fspath(out_dir), "num_mels": num_mels},
                # A fresh cache each time: nothing to look up, so skip hashing the generator.
                fingerprint=f"adares-export-{secrets.token_hex(8)}",
                writer_batch_size=_HF_WRITER_BATCH,
            )
        except datasets.exceptions.DatasetGenerationError as error:
            if isinstance(error.__cause__, AdaresError):
                raise error.__cause__ from None
            raise
        if format == "arrow":
            rows.save_to_disk(str(stage), max_shard_size=max_shard_bytes)
        else:
            shards = max(1, math.ceil(rows.data.nbytes / max_shard_bytes))
            for shard in range(shards):
                name = stage / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet"
                name.parent.mkdir(exist_ok=True)
                rows.shard(shards, shard, contiguous=True).to_parquet(str(name), batch_size=_HF_WRITER_BATCH)
        count = len(rows)
        del rows  # its memory-mapped cache files go with the cache folder
        files = tuple(sorted(path.relative_to(stage).as_posix() for path in stage.rglob("*") if path.is_file()))
    return ExportSummary("hf", str(dest), count, files)


def _hf_rows(out_dir: str, num_mels: int) -> Iterator[dict[str, Any]]:
    """Rows of :func:`to_hf`, one feature file at a time (a module function: ``datasets`` runs it by name)."""
    dataset = _open(out_dir)
    for record, features in _items(dataset):
        if features.num_mels != num_mels:
            raise ParameterError(
                f"{record['source']} has {features.num_mels} mel bins, the first item {num_mels}: one dataset "
                "column holds one width"
            )
        yield {
            "id": _item_id(record),
            "source": record["source"],
            "mel": features.mel,
            "spans": features.spans,
            "meta": json.dumps(features.meta, sort_keys=True),
        }


# -- reading the output folder: the one place that knows its layout ------------------------------


def _open(out_dir: str | os.PathLike[str]) -> FeatureDataset:
    return FeatureDataset(out_dir)


def _items(dataset: FeatureDataset) -> Iterator[tuple[dict[str, Any], Features]]:
    """Each manifest record with its features, in the dataset's order, one file in memory at a time."""
    for index, record in enumerate(dataset.records):
        yield record, dataset.features(index)


def _item_id(record: dict[str, Any]) -> str:
    return str(record.get("id", record["source"]))


def _extent(features: Features) -> tuple[int, int]:
    """First and last sample the frames cover (0 and the audio's length when there is no frame)."""
    if features.num_frames == 0:
        return 0, features.num_samples
    return int(features.spans[0, 0]), int(features.spans[-1, 1])


def _refuse_duplicates(names: dict[str, str], *, what: str) -> None:
    """Refuse two ids mapped to one name; ``names`` maps each item id to its name in the export."""
    owner: dict[str, str] = {}
    for item, name in names.items():
        if name in owner:
            raise ParameterError(
                f"ids {owner[name]!r} and {item!r} both become the {what} {name!r}; give the items distinct ids"
            )
        owner[name] = item


def _require(package: str) -> Any:
    """Import an optional package, or say how to install it."""
    try:
        return __import__(package)
    except ImportError as error:
        raise ParameterError(
            f"exporting needs the optional package {package!r}: pip install 'adares[export]'"
        ) from error


# -- atomic folders ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _temporary_folder(final: Path, purpose: str) -> Iterator[Path]:
    """A new folder next to ``final`` (same filesystem, so a rename moves it), removed on exit."""
    folder = final.parent / f".{final.name}{TEMP_MARKER}{purpose}-{os.getpid()}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _staged(final: Path, *, overwrite: bool) -> Iterator[Path]:
    """Build a folder under a temporary name; rename it to ``final`` when the block succeeds.

    An existing empty folder is replaced; a non-empty one only with ``overwrite``, and then only
    once the new one is complete.
    """
    if final.exists() and not final.is_dir():
        raise ParameterError(f"{final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise ParameterError(f"{final} exists and is not empty: pass overwrite=True (--overwrite) to replace it")
    with _temporary_folder(final, "stage") as stage:
        yield stage
        with _temporary_folder(final, "old") as old:
            if final.exists():
                final.rename(old / "previous")
            stage.rename(final)
