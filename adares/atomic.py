"""Atomic file writes: a temporary name in the same folder, then a rename.

A reader, or a rerun after ``kill -9``, sees either the old file or the complete new one, never a
half-written file. Temporary files carry :data:`TEMP_MARKER` in their name so a later run can
recognise and remove the leftovers of a killed one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["TEMP_MARKER", "atomic_open", "atomic_write_text", "remove_stale_temporaries"]

TEMP_MARKER = ".adares-tmp-"
_COUNTER = itertools.count()
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_temporary(final: Path) -> tuple[int, str]:
    """Create and open a new temporary file next to ``final``; the umask sets its permissions.

    The name carries the process id and a per-process counter (no collision between the workers
    of one run) and a random part (none with another machine writing to a shared folder);
    ``O_EXCL`` makes a collision an error rather than a shared file.
    """
    while True:
        temporary = final.parent / f".{final.name}{TEMP_MARKER}{os.getpid()}-{next(_COUNTER)}-{secrets.token_hex(3)}"
        try:
            return os.open(temporary, _CREATE, 0o666), str(temporary)
        except FileExistsError:
            continue


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
    descriptor, temporary = _create_temporary(final)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
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
