"""Helpers for the benchmark dataset recipes (see ``benchmarks/data/README.md``).

``make_datasets.py`` drives three task modules (``keywords``, ``pitch``, ``drums``); each plans its
clips up front from one seed (so a process pool can render them in any order and the result is
the same) and renders them with the Debian tools wrapped in ``tools``.
"""
