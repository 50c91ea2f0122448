"""The file extensions adares reads as audio.

Standard library only: ``adares extract`` shows them as its ``--ext`` default, and its process
must not import numpy before it has started its workers (see :mod:`adares.workers`).
"""

from __future__ import annotations

__all__ = ["AUDIO_EXTENSIONS"]

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
"""File extensions :func:`adares.audio.load` reads, the default set the corpus pipeline looks for."""
