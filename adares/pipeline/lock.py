"""The lock of an output folder: one run writes a folder at a time.

A run holds ``OUT/.adares.lock`` (its process id, host and start time) with an exclusive
``flock`` while it writes. The kernel releases the ``flock`` when the process ends, however it
ends, so the lock of a killed run is stale by construction and the next run takes it over. On a
filesystem without ``flock``, a lock whose process is no longer alive on this host is stale.
Standard library only: a run takes its lock before it starts its workers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from adares.atomic import output_errors
from adares.errors import OutputLockedError
from adares.workers import process_alive

__all__ = ["LOCK_NAME", "OutputLock"]

LOCK_NAME = ".adares.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
"""What ``flock`` says on a filesystem that does not support it."""


class OutputLock:
    """The lock of one output folder.

    Parameters
    ----------
    folder : str or os.PathLike
        The output folder (it must exist when :meth:`acquire` is called).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or take over a stale one.

        Raises
        ------
        OutputLockedError
            If another live run holds it.
        OutputError
            If the folder is read-only or not writable.
        """
        if self._fd is not None:
            return
        with output_errors(self.path):
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
                try:
                    holder = self._holder(fd)
                    if holder is not None:
                        raise OutputLockedError(_refusal(self.folder, holder), errno=errno.EWOULDBLOCK)
                    if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                        os.close(fd)  # its holder removed it as we opened it: take the new one
                        continue
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(_stamp(), sort_keys=True).encode() + b"\n", 0)
                except FileNotFoundError:
                    os.close(fd)  # removed between our open and our stat: try again
                    continue
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
                return

    def release(self) -> None:
        """Remove the lock file and let the lock go (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def _holder(self, fd: int) -> dict[str, Any] | None:
        """Who holds the lock: None when it is free or stale (this descriptor then holds it)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _read(fd)
        except OSError as error:
            if error.errno not in _NO_FLOCK:
                raise
        holder = _read(fd)  # no flock here: the recorded process decides
        return holder if _alive(holder) else None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _stamp() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _read(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the recorded process may still run: alive on this host, or on another host (unknown)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot be checked from here
    return process_alive(pid)


def _refusal(folder: Path, holder: dict[str, Any]) -> str:
    labels = (("pid", "pid "), ("host", "on "), ("started", "since "))
    who = " ".join(f"{label}{holder[key]}" for key, label in labels if key in holder)
    return (
        f"output folder {folder} is being written by another run ({who or 'adares extract'}); wait for it to "
        f"finish or stop it, or choose another output folder (its lock: {folder / LOCK_NAME})"
    )
