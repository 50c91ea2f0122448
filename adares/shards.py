"""WebDataset-compatible tar shards of features, and the byte layout shared by every streamed writer.

A shard is a plain tar file holding one sample per input file: ``<key>.mel.npy``, ``<key>.spans.npy``,
``<key>.scores.npy`` (when a compressor ran) and ``<key>.json`` (the meta). WebDataset groups the
members of a sample by the key, the member name up to the first dot of its last path component, so
keys hold no dot (:func:`member_key`); a ``/`` is kept and reads back as part of the key.

A shard is written under a temporary name and renamed when complete (:class:`ShardWriter`), so a
killed run leaves no partial shard, only a temporary file the next run removes. Members are written
with their size known in advance, so a member as large as a whole day's features is written in
pieces, never held in memory.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import secrets
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from adares.atomic import atomic_open
from adares.errors import FeatureFileError, ParameterError

__all__ = [
    "SHARDS_DIR",
    "SHARD_FILES",
    "SHARD_BYTES",
    "Member",
    "ShardWriter",
    "member_key",
    "npy_header",
    "npy_member",
    "read_member",
    "shard_keys",
]

SHARDS_DIR = "shards"
"""Folder of the shards under an output folder."""
SHARD_FILES = 1000
"""Most samples (input files) in one shard by default."""
SHARD_BYTES = 1 << 30
"""Most bytes in one shard by default; a single sample larger than this gets a shard of its own."""

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE

Member = tuple[str, int, Callable[[], Iterable[Any]]]
"""(name suffix such as ``"mel.npy"``, size in bytes, a function giving the bytes in pieces)."""


def member_key(output_id: str) -> str:
    """The WebDataset key of an output id: ``%`` and ``.`` percent-encoded, ``/`` kept.

    ``a/b.wav`` (the id of one of two inputs that differ only by extension) becomes ``a/b%2Ewav``:
    distinct ids keep distinct keys, and the key holds no dot WebDataset would split at.
    """
    return output_id.replace("%", "%25").replace(".", "%2E")


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header of a C-ordered array of ``shape`` and ``dtype`` (what ``np.save`` writes)."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy_member(name: str, array: np.ndarray) -> Member:
    """A member holding ``array`` as a ``.npy`` file."""
    array = np.require(array, requirements="C")  # keeps a 0-d array 0-d, unlike ascontiguousarray
    header = npy_header(array.shape, array.dtype)
    data = array.reshape(-1).view(np.uint8)  # raw bytes of any dtype, 0-d included
    return name, len(header) + array.nbytes, lambda: (header, data)


class ShardWriter:
    """Write samples into shards under ``folder``, starting a new shard when the bounds would be passed.

    Parameters
    ----------
    folder : str or os.PathLike
        Where the shards go (created if missing).
    max_files : int
        Most samples per shard.
    max_bytes : int
        Most bytes per shard (a larger sample gets a shard of its own).

    Notes
    -----
    A sample is only durable once :meth:`finish` (or the start of the next shard) has renamed its
    shard: :attr:`finished` lists, for each completed shard, its path and the keys it holds, and
    :attr:`failed`, for each shard that could not be completed, its keys and the error. A failure
    while writing one sample removes that sample's bytes and leaves the shard open for the next.
    """

    def __init__(self, folder: str | os.PathLike[str], *, max_files: int = SHARD_FILES, max_bytes: int = SHARD_BYTES):
        if max_files < 1 or max_bytes < 1:
            raise ParameterError(f"shard bounds must be positive, got {max_files} files and {max_bytes} bytes")
        self.folder = Path(folder)
        self.max_files, self.max_bytes = max_files, max_bytes
        self.finished: list[tuple[Path, list[str]]] = []
        self.failed: list[tuple[list[str], BaseException]] = []
        self._context: Any = None
        self._handle: IO[bytes] | None = None
        self._path: Path | None = None
        self._keys: list[str] = []
        self._size = 0

    def add(self, key: str, members: list[Member]) -> None:
        """Append one sample (its members in order) to the current shard, starting a new one if needed.

        Raises
        ------
        OSError
            If this sample cannot be written (a shard that cannot be completed is in :attr:`failed`).
        """
        size = sum(_BLOCK + _padded(length) for _, length, _ in members)
        if self._keys and (len(self._keys) >= self.max_files or self._size + size > self.max_bytes):
            self._close()
        if self._handle is None:
            self._open()
        handle = self._handle
        assert handle is not None  # noqa: S101 - opened just above
        start = handle.tell()
        try:
            for suffix, length, pieces in members:
                _write_member(handle, f"{key}.{suffix}", length, pieces())
        except BaseException:
            handle.seek(start)
            handle.truncate()
            raise
        self._keys.append(key)
        self._size += size

    def finish(self) -> None:
        """Complete and rename the current shard, if it holds any sample."""
        if self._keys:
            self._close()
        elif self._handle is not None:
            self.abort()

    def abort(self) -> None:
        """Drop the current shard (its temporary file is removed)."""
        if self._context is not None:
            context, self._context, self._handle, self._keys, self._size = self._context, None, None, [], 0
            with contextlib.suppress(Exception):
                context.__exit__(ParameterError, ParameterError("shard aborted"), None)

    def _open(self) -> None:
        self._path = self.folder / f"shard-{os.getpid()}-{secrets.token_hex(6)}.tar"
        self._context = atomic_open(self._path, "wb")
        self._handle = self._context.__enter__()

    def _close(self) -> None:
        """Complete the shard (end blocks, then the rename) into :attr:`finished`, or into :attr:`failed`."""
        handle, context, keys, path = self._handle, self._context, self._keys, self._path
        assert handle is not None and path is not None  # noqa: S101 - a shard is open when it holds keys
        try:
            end = handle.tell() + 2 * _BLOCK
            handle.write(b"\0" * (2 * _BLOCK + (-end) % _RECORD))
        except Exception as error:  # noqa: BLE001 - reported for the shard's samples
            self.abort()
            self.failed.append((keys, error))
            return
        self._context, self._handle, self._keys, self._size = None, None, [], 0
        try:
            context.__exit__(None, None, None)  # flush, close and rename
        except Exception as error:  # noqa: BLE001 - the temporary file is gone; reported for its samples
            self.failed.append((keys, error))
            return
        self.finished.append((path, keys))


def _padded(length: int) -> int:
    return length + (-length) % _BLOCK


def _write_member(handle: IO[bytes], name: str, length: int, pieces: Iterable[Any]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = length, 0o644, 0
    handle.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    written = 0
    for piece in pieces:
        written += handle.write(piece)
    if written != length:
        raise ParameterError(f"member {name} of {length} bytes got {written}")
    handle.write(b"\0" * ((-length) % _BLOCK))


@functools.lru_cache(maxsize=64)
def _index(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size) of a shard (cached while the file is unchanged)."""
    with tarfile.open(path, "r:") as tar:
        return {info.name: (info.offset_data, info.size) for info in tar if info.isfile()}


def read_member(path: str | os.PathLike[str], key: str) -> dict[str, Any]:
    """The arrays and meta of one sample of a shard: ``mel``, ``spans``, ``scores`` (or None), ``meta``.

    Raises
    ------
    FeatureFileError
        If the shard is missing or corrupt, or holds no sample ``key`` with ``mel``, ``spans`` and
        meta; the message names the shard, the key and the reason.
    """
    import json

    where = f"{path}#{key}"
    try:
        stat = os.stat(path)
        index = _index(str(path), stat.st_size, stat.st_mtime_ns)
        missing = [suffix for suffix in ("mel.npy", "spans.npy", "json") if f"{key}.{suffix}" not in index]
        if missing:
            raise FeatureFileError(f"{where}: no such sample in the shard (missing {', '.join(missing)})")
        with open(path, "rb") as handle:

            def read(suffix: str) -> bytes:
                offset, length = index[f"{key}.{suffix}"]
                handle.seek(offset)
                return handle.read(length)

            arrays = {
                name: np.load(io.BytesIO(read(f"{name}.npy")), allow_pickle=False)
                for name in ("mel", "spans", "scores")
                if f"{key}.{name}.npy" in index
            }
            meta = json.loads(read("json"))
    except FeatureFileError:
        raise
    except FileNotFoundError:
        raise FeatureFileError(f"{where}: shard not found") from None
    except (OSError, ValueError, tarfile.TarError, EOFError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise FeatureFileError(f"{where}: cannot read shard member ({reason})") from None
    return {"mel": arrays["mel"], "spans": arrays["spans"], "scores": arrays.get("scores"), "meta": meta}


def shard_keys(path: str | os.PathLike[str]) -> set[str]:
    """The sample keys a shard holds: each member's name up to the first dot of its last path component.

    Raises
    ------
    FeatureFileError
        If the shard is missing or not a readable tar file.
    """
    try:
        stat = os.stat(path)
        names = _index(str(path), stat.st_size, stat.st_mtime_ns)
    except (OSError, tarfile.TarError, EOFError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise FeatureFileError(f"{path}: cannot read shard ({reason})") from None
    keys = set()
    for name in names:
        head, slash, last = name.rpartition("/")
        keys.add(head + slash + last.split(".", 1)[0])
    return keys
