#!/usr/bin/env python3
"""Regenerate the clips in ``demo/audio/`` (real audio from Debian-packaged tools; see demo/README.md).

Run from the repository root after ``bash benchmarks/data/install.sh``:
``.venv/bin/python demo/make_demo_audio.py``. Uses the dataset recipe's helpers
(``benchmarks/data/datagen``) for the MIDI writer, rendering and levels. Deterministic except the
Ogg container's random stream serial number (the decoded audio is the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "data"))

from datagen import dsp, tools  # noqa: E402
from datagen.smf import MidiTrack  # noqa: E402

OUT = ROOT / "demo" / "audio"
SR = dsp.SAMPLE_RATE
SENTENCE = "Adaptive resolution keeps the fine detail where the sound changes, and merges the rest."


def finish(x: np.ndarray, *, rms_dbfs: float = -20.0) -> np.ndarray:
    """Loudness to ``rms_dbfs`` (active frames), peak at most -1 dBFS, float32."""
    return dsp.limit_peak(dsp.set_level(x, rms_dbfs=rms_dbfs)).astype(np.float32)


def speech() -> np.ndarray:
    audio, sr = tools.espeak(SENTENCE, voice="en-us+f3", rate_wpm=165, pitch=55, amplitude=100)
    return finish(dsp.trim(dsp.resample(audio, sr_in=sr), sr=SR, margin_s=0.15))


def piano_melody() -> np.ndarray:
    """Eight notes of a C major phrase on FluidR3's grand piano, with a held last note."""
    track = MidiTrack()
    track.program(0.0, channel=0, program=0)
    for i, key in enumerate((60, 64, 67, 72, 71, 67, 65, 64)):
        track.note(0.05 + 0.3 * i, channel=0, key=key, velocity=70 + 5 * (i % 3), duration_s=0.28 if i < 7 else 1.2)
    return finish(tools.render_midi(track.to_bytes(), font="fluidr3")[: round(3.6 * SR)])


def guitar_notes() -> np.ndarray:
    """A nylon-guitar E minor arpeggio, let ring, from TimGM6mb (the second soundfont)."""
    track = MidiTrack()
    track.program(0.0, channel=0, program=24)
    for i, key in enumerate((40, 47, 52, 55, 59, 64)):
        track.note(0.05 + 0.25 * i, channel=0, key=key, velocity=85, duration_s=2.5 - 0.25 * i)
    return finish(tools.render_midi(track.to_bytes(), font="timgm6mb")[: round(3.0 * SR)])


def drum_pattern() -> np.ndarray:
    """Two bars of a rock beat at 120 bpm on FluidR3's standard kit (MIDI channel 10)."""
    track = MidiTrack()
    track.program(0.0, channel=9, program=0)
    eighth = 0.25
    for step in range(16):
        t = 0.05 + step * eighth
        track.note(t, channel=9, key=42, velocity=70 if step % 2 else 95, duration_s=0.1)  # closed hi-hat
        if step % 4 == 0 or step == 7:
            track.note(t, channel=9, key=36, velocity=110, duration_s=0.1)  # kick
        if step % 4 == 2:
            track.note(t, channel=9, key=38, velocity=105, duration_s=0.1)  # snare
    track.note(0.05 + 16 * eighth, channel=9, key=49, velocity=100, duration_s=0.5)  # closing crash
    return finish(tools.render_midi(track.to_bytes(), font="fluidr3")[: round(4.8 * SR)])


def tabla_loop() -> np.ndarray:
    """The first 3 s of Sonic Pi's ``loop_tabla`` (a real tabla recording, CC0)."""
    audio, sr = tools.sonic_pi_sample("loop_tabla")
    return finish(dsp.resample(audio, sr_in=sr)[: 3 * SR])


def main() -> int:
    clips = {
        "speech/sentence.flac": speech,
        "music/piano_melody.ogg": piano_melody,
        "music/guitar_arpeggio.flac": guitar_notes,
        "drums/rock_beat.flac": drum_pattern,
        "drums/tabla_loop.flac": tabla_loop,
    }
    for relative, make in clips.items():
        path = OUT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = make()
        if path.suffix == ".ogg":
            sf.write(path, audio, SR, format="OGG", subtype="VORBIS")
        else:
            sf.write(path, audio, SR, format="FLAC", subtype="PCM_16")
        print(f"{path.relative_to(ROOT)}: {len(audio) / SR:.2f} s, {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
