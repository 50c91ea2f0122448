#!/usr/bin/env python3
"""Regenerate the small committed test clips in ``tests/data/`` (see tests/data/README.md).

Run from the repository root after ``bash benchmarks/data/install.sh``:
``.venv/bin/python tests/data/make_test_clips.py``. Tests never run this; they read the committed
files. Uses the dataset recipe's helpers (``benchmarks/data/datagen``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "data"))

from datagen import dsp, tools  # noqa: E402
from datagen.smf import MidiTrack  # noqa: E402

OUT = ROOT / "tests" / "data"
SR = dsp.SAMPLE_RATE
KEYWORD_START = 4000  # samples at 16 kHz: the word begins 0.25 s in
DRUM_ONSET = 4000  # the snare's first sample within 40 dB of its peak sits at exactly 0.25 s


def keyword() -> np.ndarray:
    """espeak-ng ``yes`` (en-us, variant m3), trimmed, RMS -20 dBFS, from 0.25 s in 1 s of silence."""
    audio, sr = tools.espeak("yes", voice="en-us+m3", rate_wpm=160, pitch=50, amplitude=100)
    word = dsp.set_level(dsp.trim(dsp.resample(audio, sr_in=sr), sr=SR), rms_dbfs=-20.0)
    return dsp.limit_peak(dsp.place(word, num_samples=SR, start=KEYWORD_START))


def drum_hit() -> np.ndarray:
    """FluidR3 standard kit, acoustic snare (key 38, velocity 100), onset at 0.25 s, peak -3 dBFS."""
    track = MidiTrack()
    track.program(0.0, channel=9, program=0)
    track.note(0.05, channel=9, key=38, velocity=100, duration_s=0.9)
    hit = tools.render_midi(track.to_bytes(), font="fluidr3")[round(0.05 * SR) :]
    peak = float(np.max(np.abs(hit)))
    head = int(np.argmax(np.abs(hit) >= peak * dsp.db_to_amplitude(-40.0)))
    hit = hit[head:] * (dsp.db_to_amplitude(-3.0) / peak)
    return dsp.place(hit, num_samples=SR, start=DRUM_ONSET)


def stereo_notes() -> np.ndarray:
    """2 s at 44.1 kHz, (N, 2): left A4 (440 Hz), right E5 (659.26 Hz), FluidR3 grand piano.

    Different notes per channel, so a test can tell a true mixdown (both pitches) from taking one
    channel. Each note is rendered alone at 44.1 kHz (no resampling), channels averaged to mono.
    """
    channels = []
    for key in (69, 76):
        track = MidiTrack()
        track.program(0.0, channel=0, program=0)
        track.note(0.1, channel=0, key=key, velocity=90, duration_s=1.6)
        channels.append(dsp.to_mono(tools.render_midi_raw(track.to_bytes(), font="fluidr3", sample_rate=44_100)))
    n = 2 * 44_100
    stereo = np.stack([np.pad(c, (0, max(0, n - len(c))))[:n] for c in channels], axis=1)
    stereo[-441:] *= np.linspace(1.0, 0.0, 441)[:, None]  # 10 ms fade: the piano still rings at 2 s
    return stereo * (dsp.db_to_amplitude(-3.0) / float(np.max(np.abs(stereo))))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    word = keyword()
    sf.write(OUT / "keyword_yes_16k.flac", word, SR, format="FLAC", subtype="PCM_16")
    sf.write(OUT / "keyword_yes_16k.mp3", word, SR, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(OUT / "drum_snare_16k.flac", drum_hit(), SR, format="FLAC", subtype="PCM_16")
    # 8-bit PCM keeps a 2 s 44.1 kHz stereo WAV at 176 KB (16-bit would be 353 KB alone).
    sf.write(OUT / "notes_44k1_stereo.wav", stereo_notes(), 44_100, format="WAV", subtype="PCM_U8")
    for path in sorted(OUT.iterdir()):
        if path.suffix in {".flac", ".mp3", ".wav"}:
            info = sf.info(path)
            print(f"{path.name}: {info.samplerate} Hz, {info.channels} ch, {info.frames} frames, "
                  f"{info.subtype}, {path.stat().st_size / 1024:.0f} KiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
