"""Pure tensor functions of the data path: the mel front end, importance and the merge."""

BLOCK_ELEMENTS = 1 << 22
"""Elements (16 MiB of float32) of the largest temporary a blockwise computation makes at once: the
long inputs of the merge, the flux and the estimator are processed in blocks of this size."""
