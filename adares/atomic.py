"""Atomic file writes: a temporary name in the same folder, then a rename.

A reader, or a rerun after ``kill -9``, sees either the old file or the complete new one, never a
half-written file. Temporary files carry :data:`TEMP_MARKER` in their name so a later run can
recognise and remove the leftovers of a killed one.

A write that fails because the folder is full or not writable (:data:`OUTPUT_ERRNOS`) raises
:class:`~adares.errors.OutputError`: no file is to blame, so a run stops rather than recording
each file as failed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from adares.errors import OutputError

__all__ = [
    "TEMP_MARKER",
    "OUTPUT_ERRNOS",
    "atomic_open",
    "atomic_write_text",
    "output_errors",
    "os_reason",
    "remove_stale_temporaries",
]

TEMP_MARKER = ".adares-tmp-"
_COUNTER = itertools.count()
OUTPUT_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
    if code is not None
)
"""Errors of writing that concern the folder (full, over quota, read-only, not writable), not
the file written: any other write to the same folder would fail the same way. A name too long
or a path that is a folder stay the error of that one file."""
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


def os_reason(error: OSError) -> str:
    """The operating system's reason with its symbolic name: ``No space left on device (ENOSPC)``."""
    name = errno.errorcode.get(error.errno or 0)
    text = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    return f"{text} ({name})" if name else text


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Raise an :class:`OSError` of :data:`OUTPUT_ERRNOS` met in the block as :class:`OutputError`.

    Parameters
    ----------
    path : str or os.PathLike
        What the block writes, named in the message.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        if error.errno not in OUTPUT_ERRNOS:
            raise
        raise OutputError(f"cannot write {path}: {os_reason(error)}", errno=error.errno) from error


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

    Raises
    ------
    OutputError
        If the folder is full or not writable (:data:`OUTPUT_ERRNOS`), also when the block's own
        writes meet it.
    """
    final = Path(path)
    with output_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = _create_temporary(final)
    try:
        with output_errors(final), os.fdopen(descriptor, mode) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        with output_errors(final):
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

    Raises
    ------
    OutputError
        If a leftover cannot be removed because the folder is read-only or not writable.
    """
    removed = 0
    for here, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and TEMP_MARKER in name:
                leftover = os.path.join(here, name)
                with output_errors(leftover), contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
                    removed += 1
    return removed
