"""What the fork server of the local worker pool imports.

:func:`adares.workers.local_pool` names this module as the fork server's only preload. Importing
it there loads the worker side of the pipeline and the extractors it builds (torch with them)
once, so every worker forked from the server starts with them loaded. The run that started the
server ends it (:func:`adares.workers.stop_fork_server`); workers end through ``os._exit``.

Imported anywhere else (documentation tools, a curious user), it only imports the two modules.
"""

from __future__ import annotations

import adares.pipeline.worker  # noqa: F401 - preloaded for the workers
import adares.registry  # noqa: F401 - preloaded for the workers

__all__: list[str] = []
