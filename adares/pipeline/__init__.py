"""``extract``: a corpus of audio files in, one feature file per input out.

One module per concern:

- :mod:`~adares.pipeline.config`: what a run computes (:class:`ExtractConfig`) and its hashes;
- :mod:`~adares.pipeline.discovery`: the input files;
- :mod:`~adares.pipeline.planning`: the tasks, the configuration resolved, what an earlier run
  finished (resume);
- :mod:`~adares.pipeline.running`: where the tasks run, in bounded batches, with retries when a
  worker dies;
- :mod:`~adares.pipeline.worker`: each worker's extractor, and a batch of files turned into
  feature files and manifest records;
- :mod:`~adares.pipeline.extraction`: :func:`extract`, those steps in order.

The executor is any :class:`concurrent.futures.Executor`: a local process pool by default
(:mod:`adares.workers`), or a Dask cluster's (:mod:`adares.cluster`).

Importing this package imports neither numpy nor torch, so :func:`extract` can start the workers
before this process's own heavy imports.
"""

from __future__ import annotations

from adares.errors import ConfigMismatchError
from adares.pipeline.config import ExtractConfig
from adares.pipeline.discovery import discover
from adares.pipeline.extraction import Summary, extract

__all__ = ["ExtractConfig", "Summary", "extract", "discover", "ConfigMismatchError"]
