"""Finding a run's input files. Standard library only, like the rest of what ``adares.pipeline`` exports."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from adares.errors import ParameterError
from adares.extensions import AUDIO_EXTENSIONS

__all__ = ["discover"]


def discover(
    input_path: str | os.PathLike[str],
    *,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
    exclude: str | os.PathLike[str] | None = None,
) -> list[PurePosixPath]:
    """Find audio files under ``input_path``, recursively, in a stable (sorted) order.

    Parameters
    ----------
    input_path : str or os.PathLike
        A folder (searched recursively) or a single file.
    extensions : iterable of str
        Extensions to include, case-insensitive, with or without the dot.
    exclude : path, optional
        A folder to skip (the output folder when it lies inside the input folder).

    Returns
    -------
    list of PurePosixPath
        Paths relative to ``input_path`` (for a single file: its name). Hidden files and folders
        (names starting with ``.``, such as macOS ``._x.wav`` companions) are skipped.

    Raises
    ------
    ParameterError
        If ``input_path`` does not exist.
    """
    root = Path(input_path)
    wanted = {("." + ext.lower().lstrip(".")) for ext in extensions}
    if root.is_file():
        return [PurePosixPath(root.name)]
    if not root.is_dir():
        raise ParameterError(f"input {str(root)!r} does not exist")
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[PurePosixPath] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != excluded)
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                found.append(PurePosixPath((here / name).relative_to(root).as_posix()))
    return sorted(found)
