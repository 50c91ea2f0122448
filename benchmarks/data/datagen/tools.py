"""Thin wrappers over the Debian tools the recipes use: espeak-ng, fluidsynth, the Sonic Pi samples."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from . import dsp

SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
SOUNDFONTS = {"fluidr3": SOUNDFONT_DIR / "FluidR3_GM.sf2", "timgm6mb": SOUNDFONT_DIR / "TimGM6mb.sf2"}
SONIC_PI_SAMPLES = Path("/usr/share/sonic-pi/samples")
FLUIDSYNTH_SR = 48_000
DEBIAN_PACKAGES = ("espeak-ng", "fluidsynth", "fluid-soundfont-gm", "timgm6mb-soundfont", "sonic-pi-samples")


class ToolError(RuntimeError):
    """A tool is missing or failed; the message says which and how to install it."""


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ToolError(f"{program} not found: run `bash benchmarks/data/install.sh` first")
    return path


def _parse_wav_stdout(data: bytes) -> tuple[np.ndarray, int]:
    """Decode the 16-bit mono WAV espeak-ng writes to stdout.

    A pipe cannot be rewound, so espeak-ng leaves the RIFF and data sizes as placeholders; read the
    sample rate from the fmt chunk and take everything after the data chunk header.
    """
    fmt = data.find(b"fmt ")
    marker = data.find(b"data")
    if data[:4] != b"RIFF" or fmt < 0 or marker < 0:
        raise ToolError("espeak-ng did not write a WAV stream")
    channels = int.from_bytes(data[fmt + 10 : fmt + 12], "little")
    sr = int.from_bytes(data[fmt + 12 : fmt + 16], "little")
    bits = int.from_bytes(data[fmt + 22 : fmt + 24], "little")
    if channels != 1 or bits != 16:
        raise ToolError(f"espeak-ng wrote {channels} channel(s) of {bits} bits, expected mono 16-bit")
    payload = data[marker + 8 :]
    payload = payload[: len(payload) // 2 * 2]
    return np.frombuffer(payload, dtype="<i2").astype(np.float64) / 32768.0, sr


def espeak(text: str, *, voice: str, rate_wpm: int, pitch: int, amplitude: int) -> tuple[np.ndarray, int]:
    """Synthesise ``text``; returns (waveform (N,) float64 in [-1, 1), sample rate)."""
    cmd = [require("espeak-ng"), "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-a", str(amplitude)]
    result = subprocess.run([*cmd, "--stdout", text], capture_output=True, check=False)
    if result.returncode != 0:
        raise ToolError(f"espeak-ng failed for voice {voice!r}: {result.stderr.decode(errors='replace').strip()}")
    return _parse_wav_stdout(result.stdout)


@functools.cache
def espeak_data_dir() -> Path:
    """Where espeak-ng keeps its voices, as it reports itself (``Data at: ...``)."""
    out = subprocess.run([require("espeak-ng"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Data at:\s*(\S+)", out)
    if match is None:
        raise ToolError(f"cannot find the espeak-ng data folder in {out!r}")
    return Path(match.group(1))


def espeak_variants() -> list[str]:
    """Names of the installed voice variants (files in ``voices/!v``), sorted.

    espeak-ng silently falls back to the plain voice for an unknown variant, so the recipe only
    ever asks for names that exist.
    """
    folder = espeak_data_dir() / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def render_midi_raw(midi: bytes, *, font: str, sample_rate: int = FLUIDSYNTH_SR) -> np.ndarray:
    """Render a MIDI file with fluidsynth (no reverb or chorus: deterministic) as float (N, 2) stereo.

    Dynamic sample loading reads only the samples the file plays (the 148 MB FluidR3 bank loads in
    half the time); the rendered samples are identical either way.
    """
    fluidsynth = require("fluidsynth")
    with tempfile.TemporaryDirectory(prefix="adares-fs-") as tmp:
        mid = Path(tmp) / "in.mid"
        wav = Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        cmd = [fluidsynth, "-ni", "-R", "0", "-C", "0", "-r", str(sample_rate), "-O", "float",
               "-o", "synth.dynamic-sample-loading=1", "-F", str(wav), str(SOUNDFONTS[font]), str(mid)]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, check=False)
        if result.returncode != 0 or not wav.exists():
            raise ToolError(f"fluidsynth failed: {result.stderr.decode(errors='replace').strip()}")
        audio, sr = sf.read(wav, dtype="float64", always_2d=True)
    if sr != sample_rate:
        raise ToolError(f"fluidsynth wrote {sr} Hz, asked for {sample_rate} Hz")
    return audio


def render_midi(midi: bytes, *, font: str) -> np.ndarray:
    """``render_midi_raw`` at 48 kHz, averaged to mono and resampled to 16 kHz with soxr: (N,)."""
    return dsp.resample(dsp.to_mono(render_midi_raw(midi, font=font)), sr_in=FLUIDSYNTH_SR)


@functools.cache
def sonic_pi_sample(name: str) -> tuple[np.ndarray, int]:
    """A Sonic Pi sample by name (without ``.flac``) as mono float64 at its own rate; cached per process."""
    path = SONIC_PI_SAMPLES / f"{name}.flac"
    if not path.exists():
        raise ToolError(f"{path} missing: run `bash benchmarks/data/install.sh` first")
    audio, sr = sf.read(path, dtype="float64", always_2d=True)
    audio = dsp.to_mono(audio)
    audio.setflags(write=False)
    return audio, sr


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the audio, for ``dataset.json``."""
    import soxr

    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            return "missing"
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"

    versions = {
        "espeak-ng": first_line(["espeak-ng", "--version"]),
        "fluidsynth": first_line(["fluidsynth", "--version"]),
        "libsndfile": sf.__libsndfile_version__,
        "soundfile": sf.__version__,
        "soxr": soxr.__version__,
        "numpy": np.__version__,
    }
    for package in DEBIAN_PACKAGES:
        versions[f"deb:{package}"] = first_line(["dpkg-query", "-W", "-f", "${Version}", package])
    return versions
