from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
DATA = Path(__file__).parent / "data"


def python_output(script: str) -> list[str]:
    """Run ``script`` in a fresh interpreter; the words it printed (it must succeed)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def synth(seconds: float, *, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A deterministic test signal: a chirp, a click train and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t / max(seconds, 1e-3)) * t)
    clicks = np.zeros_like(t)
    clicks[:: max(1, sr // 7)] = 0.8
    return (chirp + clicks + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def make_corpus(root: Path, *, count: int = 6, corrupt: bool = True, seconds: float = 0.5) -> list[str]:
    """A small folder tree of WAV and FLAC files; optionally one corrupt file. Returns relative paths."""
    names = []
    for i in range(count):
        folder = root / ("speech" if i % 2 else "music") / f"part{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".wav" if i % 3 else ".flac"
        path = folder / f"clip{i}{suffix}"
        sf.write(path, synth(seconds + 0.1 * i, seed=i), SR)
        names.append(path.relative_to(root).as_posix())
    if corrupt:
        bad = root / "speech" / "broken.wav"
        bad.write_text("not a wave file at all\n")
        names.append(bad.relative_to(root).as_posix())
    return sorted(names)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    make_corpus(root)
    return root


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children
