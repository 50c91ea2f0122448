"""The exception hierarchy of adares.

Every error adares raises on purpose derives from :class:`AdaresError`, so a caller can catch one
class. Errors raised for bad arguments also derive from :class:`ValueError`, the Python convention.
"""

from __future__ import annotations

__all__ = [
    "AdaresError",
    "ParameterError",
    "ConfigMismatchError",
    "AudioDecodeError",
    "ModelError",
    "FeatureFileError",
    "OutputError",
    "OutputLockedError",
    "AdaresWarning",
    "ValidationWarning",
]


class AdaresError(Exception):
    """Root of every exception raised by adares."""


class ParameterError(AdaresError, ValueError):
    """An argument or a configuration value is invalid (wrong type, range, or combination)."""


class ConfigMismatchError(ParameterError):
    """An output folder holds features made with another configuration than the one asked for."""


class AudioDecodeError(AdaresError):
    """An audio file could not be read.

    The message always names the path and gives the reason in one line, so it can go straight
    into a failure report.

    Parameters
    ----------
    path : str or os.PathLike
        The file that could not be read.
    reason : str
        Why, in one line (``"not an audio file"``, ``"empty file (0 bytes)"``, ...).
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the decoder said
        super().__init__(f"{self.path}: {self.reason}")


class ModelError(AdaresError):
    """A compressor bundle is missing, malformed, tampered with, or incompatible with the input."""


class FeatureFileError(AdaresError):
    """A feature file (``.npz`` written by adares) is missing, corrupt, or not in adares' format."""


class OutputError(AdaresError, OSError):
    """The output folder cannot be written: full (ENOSPC, EDQUOT), read-only (EROFS) or not writable
    (EACCES, EPERM).

    No input is to blame, so a run stops at once instead of failing every remaining file; rerun
    once the folder is fixed to resume. Also an :class:`OSError`, so code that caught the
    operating system's error still catches it.

    Parameters
    ----------
    message : str
        What could not be written and why, in one line.
    errno : int, optional
        The operating system's error number.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __reduce__(self) -> tuple:
        # sent back from worker processes: keep the errno (OSError pickles its arguments only)
        return type(self), (str(self), self.errno)


class OutputLockedError(OutputError):
    """Another run is writing the output folder (it holds the folder's lock file)."""


class AdaresWarning(UserWarning):
    """Root of every warning adares issues."""


class ValidationWarning(AdaresWarning):
    """A setting lies outside what a compressor bundle was validated on; its scores may be poor."""
