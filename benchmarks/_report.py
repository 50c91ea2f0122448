"""Sections of ``benchmarks/RESULTS.md``, each owned by one benchmark and replaced when it reruns.

Every benchmark writes its own section between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``;
the header (machine and date of the latest update) is rewritten each time. Sections of benchmarks
that did not rerun are kept as they were, each with its own date line.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
HEADER_BEGIN, HEADER_END = "<!-- header:begin -->", "<!-- header:end -->"


def machine() -> str:
    """One line describing where the numbers were measured."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp() -> str:
    """Date, commit and machine, for the top of a section."""
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"_Measured {today} at commit `{commit()}` on {machine()}._"


def update_section(name: str, markdown: str, *, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md and refresh the header."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.is_file() else ""
    header = (
        f"{HEADER_BEGIN}\n# Benchmark results\n\nRegenerate with `make bench` (every benchmark) or one "
        f"`make bench-*` target. Ratios compare two sides measured in the same run on the same machine; "
        f"times are medians. Last update: {stamp()}\n{HEADER_END}"
    )
    if HEADER_BEGIN in text and HEADER_END in text:
        head, rest = text.split(HEADER_BEGIN, 1)
        text = head + header + rest.split(HEADER_END, 1)[1]
    else:
        text = header + "\n\n" + text.lstrip()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
