"""Atomic file writes: a temporary name in the same folder, then a rename.

A reader, or a rerun after ``kill -9``, sees either the old file or the complete new one, never a
half-written file. Temporary files carry :data:`TEMP_MARKER` in their name so a later run can
recognise and remove the leftovers of a killed one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["TEMP_MARKER", "atomic_open", "atomic_write_text", "remove_stale_temporaries"]

TEMP_MARKER = ".adares-tmp-"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The final destination. Its folder is created if missing.
    mode : str
        ``"wb"`` or ``"w"``.
    fsync : bool
        Flush to the disk before the rename. Not needed to survive a killed process (the rename
        is atomic either way), only to survive a power cut; it costs a disk round trip per file.

    Yields
    ------
    file object
        The open temporary file. If the block raises, the temporary file is removed and ``path``
        is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{final.name}{TEMP_MARKER}", dir=final.parent)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete temporary files a killed run left under ``folder`` (recursively).

    Returns
    -------
    int
        How many files were removed.
    """
    removed = 0
    for leftover in Path(folder).rglob(f".*{TEMP_MARKER}*"):
        if leftover.is_file():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
    return removed
