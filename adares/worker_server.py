"""What the fork server of the local worker pool imports, and how it ends.

:func:`adares.workers.local_pool` names this module as the fork server's only preload. Importing
it there loads the worker side of the pipeline and the extractors it builds (torch with them)
once, so every worker forked from the server starts with them loaded.

It also makes the server skip the interpreter's clean-up when it ends. The server only forks
workers; it holds no files, buffers or results, and the process that started it owns its
socket. Tearing down torch's modules would nevertheless keep a core busy after ``extract`` had
returned, and the server holds the command's standard output and error open meanwhile, so a
caller reading them (``subprocess.run(..., capture_output=True)``, a pipe to ``tee``) would wait
for the end of the output. Workers are unaffected: they end through ``os._exit`` already.

Imported anywhere else (documentation tools, a curious user), it only imports the two modules.
"""

from __future__ import annotations

import atexit
import os
import sys
from multiprocessing import forkserver

import adares.pipeline.worker  # noqa: F401 - preloaded for the workers
import adares.registry  # noqa: F401 - preloaded for the workers

__all__ = ["imported_by_fork_server"]


def imported_by_fork_server() -> bool:
    """Whether this module is being imported by the fork server's preload step.

    True only while :func:`multiprocessing.forkserver.main` is on the call stack, i.e. in the
    server process itself, during its start-up. False where that function cannot be found (a
    Python that starts its server otherwise keeps the ordinary exit).
    """
    server_main = getattr(getattr(forkserver, "main", None), "__code__", None)
    frame = sys._getframe() if hasattr(sys, "_getframe") and server_main is not None else None
    while frame is not None:
        if frame.f_code is server_main:
            return True
        frame = frame.f_back
    return False


def _end_at_once() -> None:
    os._exit(0)


SKIPS_TEARDOWN = imported_by_fork_server()
"""Whether this process ends without the interpreter's clean-up (the fork server, and the
workers it forks, which inherit this value but end through ``os._exit`` anyway)."""

if SKIPS_TEARDOWN:
    # Registered after torch's own handlers, so it runs first and they are skipped with the rest.
    atexit.register(_end_at_once)
