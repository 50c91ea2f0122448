"""Single notes, labelled by pitch class (NSynth-like), rendered from two General MIDI soundfonts.

Each (soundfont, program) is an instrument; instruments decide the split, so test instruments are
never heard in training. Presets that reuse one recording (found by rendering the same note and
comparing waveforms) count as one instrument.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import common, dsp, splits, tools
from .smf import MidiTrack

LABELS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FONTS = ("fluidr3", "timgm6mb")

# Playable MIDI key range per GM program (0-based), from each instrument's usual range, so a note
# never sounds as a sample stretched far outside what was recorded.
_FAMILY_RANGE = {
    0: (33, 96), 1: (48, 96), 2: (36, 96), 3: (40, 84), 4: (28, 55), 5: (36, 84), 6: (36, 84), 7: (40, 80),
    8: (48, 84), 9: (60, 96), 10: (36, 84), 11: (36, 84), 13: (48, 84),
}  # fmt: skip
_PROGRAM_RANGE = {
    40: (55, 89), 41: (48, 84), 42: (36, 72), 43: (28, 55), 46: (36, 96),  # strings, harp
    56: (55, 82), 57: (40, 72), 58: (28, 58), 59: (55, 82), 60: (41, 77),  # brass
    64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 69), 68: (58, 91), 69: (52, 81), 70: (34, 72),
    71: (50, 91), 72: (74, 102), 78: (60, 78), 79: (60, 84),  # reeds, piccolo, whistle, ocarina
}  # fmt: skip
# Not one clear pitch: timpani (both fonts' sound a fourth or fifth off their key), orchestra hit
# (a chord), lead 7 (parallel fifths), bagpipe (a drone under the melody), the synth effects
# 96-103; 112-127 are percussion and sound effects.
EXCLUDED_PROGRAMS = frozenset({47, 55, 86, 109, *range(96, 104), *range(112, 128)})
PROGRAMS = tuple(p for p in range(128) if p not in EXCLUDED_PROGRAMS)
# Found by rendering every second key of every program and comparing the spectral peaks with the
# key's harmonics (see the README): TimGM6mb's whistle sounds 1.5 semitones flat (and is silent
# above key 78); its two accordions drift 45-70 cents flat above key 64.
EXCLUDED_INSTRUMENTS = frozenset({("timgm6mb", 78)})
_FONT_PROGRAM_RANGE = {("timgm6mb", 21): (36, 64), ("timgm6mb", 23): (36, 64)}

CLIP_S = 2.0
NOTES_PER_INSTRUMENT = 10
VELOCITY = (40, 127)
# `--variety wide` (opt-in): softer notes too (every preset and program is already used).
VARIETIES = {"standard": {"velocity": VELOCITY}, "wide": {"velocity": (15, 127)}}
DURATION_S = (0.2, 1.6)
ONSET_S = (0.0, 0.5)
LEVEL_DBFS = (-26.0, -16.0)
# One note per slot of the rendered file: note-on at LEAD_S, All Sound Off at CUT_S (after the
# longest stretch a clip can use), next note one slot later.
SLOT_S = 2.25
LEAD_S = 0.05
CUT_S = 2.15
PROBE_KEY = 60
# Below -100 dBFS a rendered note counts as silent (a hole in the preset).
SILENT_PEAK = 1e-5
PROBE_SLOT_S = 0.75
INSTRUMENTS_PER_JOB = 8
PROBE_SIMILARITY = 0.9
TASK_KEY = 2


def key_range(program: int, font: str | None = None) -> tuple[int, int]:
    """The MIDI keys a note of ``program`` may take (in ``font``, where a font's preset needs less)."""
    if (font, program) in _FONT_PROGRAM_RANGE:
        return _FONT_PROGRAM_RANGE[(font, program)]
    return _PROGRAM_RANGE.get(program, _FAMILY_RANGE[program // 8])


def _probe(font: str) -> dict[tuple[str, int], np.ndarray]:
    """The first half second of middle C on every program of ``font``, one render for all."""
    track = MidiTrack()
    for i, program in enumerate(PROGRAMS):
        track.program(i * PROBE_SLOT_S, channel=0, program=program)
        track.note(i * PROBE_SLOT_S + LEAD_S, channel=0, key=PROBE_KEY, velocity=100, duration_s=0.5)
        track.silence(i * PROBE_SLOT_S + PROBE_SLOT_S - LEAD_S, channel=0)
    audio = tools.render_midi(track.to_bytes(), font=font)
    return {
        (font, p): dsp.onset_aligned(_slot(audio, i, 0.6, slot_s=PROBE_SLOT_S), sr=dsp.SAMPLE_RATE, span_s=0.5)
        for i, p in enumerate(PROGRAMS)
    }


def _slot(audio: np.ndarray, index: int, length_s: float, *, slot_s: float = SLOT_S) -> np.ndarray:
    start = round((index * slot_s + LEAD_S) * dsp.SAMPLE_RATE)
    return audio[start : start + round(length_s * dsp.SAMPLE_RATE)]


def instrument_groups(map_fn: Callable = map) -> list[list[tuple[str, int]]]:
    probes: dict[tuple[str, int], np.ndarray] = {}
    for found in map_fn(_probe, FONTS):
        probes.update(found)
    items = sorted(i for i in probes if i not in EXCLUDED_INSTRUMENTS)
    return splits.group_by(items, lambda a, b: float(probes[a] @ probes[b]) > PROBE_SIMILARITY)


def plan(*, scale: float, seed: int, map_fn: Callable = map, variety: str = "standard") -> common.TaskPlan:
    velocity = VARIETIES[variety]["velocity"]
    rng = np.random.default_rng([seed, TASK_KEY])
    groups = instrument_groups(map_fn)
    group_split = splits.assign_groups([tuple(g) for g in groups], rng)
    per_instrument = max(1, round(NOTES_PER_INSTRUMENT * scale))

    by_font: dict[str, list[list[common.Clip]]] = {}
    index = 0
    instruments_in: dict[str, list[str]] = {s: [] for s in splits.SPLITS}
    # Group folds keep instruments that share a recording together, like the splits do.
    group_name = {i: f"{g[0][0]}:{g[0][1]}" for g in groups for i in g}
    for split in splits.SPLITS:
        instruments = sorted(i for g, s in group_split.items() if s == split for i in g)
        instruments_in[split] = [f"{font}:{program}" for font, program in instruments]
        # Pitch classes dealt in shuffled rounds of 12 across the split's instruments: balanced
        # per split to within one clip.
        classes = splits.cycle(range(12), per_instrument * len(instruments), rng)
        for n, (font, program) in enumerate(instruments):
            clips = []
            for pitch_class in classes[n * per_instrument : (n + 1) * per_instrument]:
                low, high = key_range(program, font)
                key = int(rng.choice([k for k in range(low, high + 1) if k % 12 == pitch_class]))
                clip = {
                    "index": index, "label": LABELS[pitch_class], "split": split, "font": font,
                    "program": program, "key": key, "velocity": int(rng.integers(velocity[0], velocity[1] + 1)),
                    "duration_s": round(float(rng.uniform(*DURATION_S)), 3),
                    "onset_s": round(float(rng.uniform(*ONSET_S)), 4),
                    "level_dbfs": round(float(rng.uniform(*LEVEL_DBFS)), 2), "seed": [seed, TASK_KEY, index],
                    "group": f"instrument:{group_name[(font, program)]}",
                    "path": f"audio/{split}/{LABELS[pitch_class].replace('#', 's')}/"
                    f"{font}-p{program:03d}-{index:05d}.flac",
                }  # fmt: skip
                clips.append(clip)
                index += 1
            by_font.setdefault(font, []).append(clips)
    # Several instruments per fluidsynth run: loading the soundfont costs more than rendering.
    jobs = [
        {"task": "pitch", "font": font, "clips": [c for instrument in chunk for c in instrument]}
        for font in FONTS
        for chunk in common.chunks(by_font.get(font, []), INSTRUMENTS_PER_JOB)
    ]
    parameters = {
        "clip_s": CLIP_S, "notes_per_instrument": NOTES_PER_INSTRUMENT, "scale": scale, "variety": variety,
        "velocity": velocity,
        "duration_s": DURATION_S, "onset_s": ONSET_S, "level_dbfs": LEVEL_DBFS, "programs": PROGRAMS,
        "excluded_programs": sorted(EXCLUDED_PROGRAMS), "excluded_instruments": sorted(EXCLUDED_INSTRUMENTS),
        "font_key_ranges": {f"{f}:{p}": r for (f, p), r in _FONT_PROGRAM_RANGE.items()},
        "fonts": {f: str(tools.SOUNDFONTS[f]) for f in FONTS},
        "fluidsynth_flags": "-ni -R 0 -C 0 -r 48000 -O float -o synth.dynamic-sample-loading=1",
        "probe_similarity": PROBE_SIMILARITY,
        "peak_ceiling_dbfs": dsp.PEAK_CEILING_DBFS,
    }  # fmt: skip
    merged = [[f"{f}:{p}" for f, p in g] for g in groups if len(g) > 1]
    return common.TaskPlan(
        name="pitch",
        labels=LABELS,
        clip_s=CLIP_S,
        jobs=jobs,
        parameters=parameters,
        split_sources={"instruments": instruments_in, "merged_instruments": merged},
    )


def _render_notes(font: str, clips: list[common.Clip], keys: list[int]) -> list[np.ndarray]:
    """Each clip's note (at ``keys``), from its note-on, as long as the clip can hold it."""
    track = MidiTrack()
    program = None
    for i, (clip, key) in enumerate(zip(clips, keys, strict=True)):
        if clip["program"] != program:
            program = clip["program"]
            track.program(i * SLOT_S, channel=0, program=program)
        track.note(i * SLOT_S + LEAD_S, channel=0, key=key, velocity=clip["velocity"], duration_s=clip["duration_s"])
        track.silence(i * SLOT_S + CUT_S, channel=0)
    audio = tools.render_midi(track.to_bytes(), font=font)
    return [_slot(audio, i, CLIP_S - clip["onset_s"]) for i, clip in enumerate(clips)]


def _toward_middle(key: int, program: int, font: str) -> int:
    low, high = key_range(program, font)
    return key + 12 if key < (low + high) / 2 else key - 12


def render(job: dict[str, Any], task_dir: str) -> list[common.Clip]:
    """All notes of a few instruments in one fluidsynth run, then cut, placed and levelled per clip.

    A few presets have holes (a key or velocity layer with no sample, e.g. TimGM6mb's whistle
    above key 78): a note that renders silent is rendered again an octave nearer the middle of
    the range, which keeps its pitch class, and the clip records the key it sounds at.
    """
    clips = job["clips"]
    keys = [clip["key"] for clip in clips]
    notes = _render_notes(job["font"], clips, keys)
    for _ in range(2):
        silent = [i for i, note in enumerate(notes) if not np.max(np.abs(note), initial=0.0) > SILENT_PEAK]
        if not silent:
            break
        for i in silent:
            keys[i] = _toward_middle(keys[i], clips[i]["program"], clips[i]["font"])
        retry = _render_notes(job["font"], [clips[i] for i in silent], [keys[i] for i in silent])
        for i, note in zip(silent, retry, strict=True):
            notes[i] = note
    num_samples = round(CLIP_S * dsp.SAMPLE_RATE)
    records = []
    for clip, key, note in zip(clips, keys, notes, strict=True):
        if not np.max(np.abs(note), initial=0.0) > SILENT_PEAK:
            raise tools.ToolError(f"{clip['font']} program {clip['program']} key {clip['key']} renders silence")
        note = dsp.set_level(note, rms_dbfs=clip["level_dbfs"])
        mix = dsp.limit_peak(dsp.place(note, num_samples=num_samples, start=round(clip["onset_s"] * dsp.SAMPLE_RATE)))
        dsp.write_flac(Path(task_dir) / clip["path"], mix)
        records.append({**clip, "key": key, "planned_key": clip["key"], **dsp.levels(mix)})
    return records
