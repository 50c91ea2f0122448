"""Single percussion hits in one second of low noise: 11 instrument classes, timing-sensitive.

Sources are the General MIDI drum kits of both soundfonts (channel 10, bank 128) and Sonic Pi
one-shots where they map cleanly to a class.

The split is by *recording*, not by kit preset: the kit presets of one soundfont reuse each
other's samples (all 30 FluidR3 kits play the same two crash cymbals; the 37 kits of both fonts
hold five distinct crash recordings in all), so splitting by preset would put the same recording
in train and test, and the only leak-free split by preset leaves validation and test nothing but
TimGM6mb's electronic kits. So every (kit, key) is rendered once, sources whose waveforms match
are merged into one recording (also a kit's pitched copies of one drum, and the hard and soft
hits of one Sonic Pi drum), and each
class's recordings are dealt 70/15/15 to the splits: no recording is heard in two splits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import common, dsp, splits, tools
from .smf import MidiTrack

# GM percussion keys per class. GM calls key 37 "side stick"; 44 (pedal hi-hat), 47 (mid tom),
# 53 (ride bell) are left out to keep classes clean. Tambourine (54) is left out because the 37
# kits hold only two distinct tambourine recordings, too few for three disjoint splits.
CLASSES: dict[str, tuple[int, ...]] = {
    "kick": (35, 36), "snare": (38, 40), "rimshot": (37,), "clap": (39,), "closed_hihat": (42,),
    "open_hihat": (46,), "low_tom": (41, 43, 45), "high_tom": (48, 50), "crash": (49, 57), "ride": (51, 59),
    "cowbell": (56,),
}  # fmt: skip
LABELS = tuple(CLASSES)
# Classes whose keys a kit usually plays from one recording, pitched (kick 35/36, the toms); a
# pitched copy escapes the waveform comparison, so all of a kit's keys in these classes count as
# one recording. Crash 49/57, ride 51/59 and snare 38/40 are distinct recordings in both fonts.
ONE_DRUM_PER_KIT = frozenset({"kick", "low_tom", "high_tom"})
# Bank-128 presets of each soundfont (as fluidsynth lists them), without the orchestra kits, whose
# keys 41-53 are timpani rather than toms.
GM_KITS: dict[str, dict[int, str]] = {
    "fluidr3": {
        **{p: f"standard{p}" for p in range(8)}, **{8 + p: f"room{p}" for p in range(8)},
        **{16 + p: f"power{p}" for p in range(4)}, 24: "electronic", 25: "tr808",
        **{32 + p: f"jazz{p}" for p in range(5)}, **{40 + p: f"brush{p}" for p in range(3)},
    },
    "timgm6mb": {0: "standard", 8: "room", 16: "power", 24: "electronic", 25: "tr808", 32: "jazz", 40: "brush"},
}  # fmt: skip
# Sonic Pi one-shots grouped into pseudo-kits by origin (one recording session or producer each).
SONIC_KITS: dict[str, dict[str, tuple[str, ...]]] = {
    "sonicpi-acoustic": {
        "kick": ("drum_heavy_kick", "drum_bass_hard", "drum_bass_soft"),
        "snare": ("drum_snare_hard", "drum_snare_soft"), "closed_hihat": ("drum_cymbal_closed",),
        "open_hihat": ("drum_cymbal_open",), "low_tom": ("drum_tom_lo_hard", "drum_tom_lo_soft"),
        "high_tom": ("drum_tom_hi_hard", "drum_tom_hi_soft"), "cowbell": ("drum_cowbell",),
    },
    "sonicpi-bd-sn": {
        "kick": ("bd_808", "bd_ada", "bd_boom", "bd_fat", "bd_gas", "bd_haus", "bd_klub", "bd_mehackit",
                 "bd_pure", "bd_sone", "bd_tek", "bd_zome", "bd_zum"),
        "snare": ("sn_dolf", "sn_dub", "sn_generic", "sn_zome"),
    },
    "sonicpi-elec": {
        "kick": ("elec_soft_kick", "elec_hollow_kick"),
        "snare": ("elec_snare", "elec_hi_snare", "elec_lo_snare", "elec_mid_snare", "elec_filt_snare"),
    },
}  # fmt: skip
DRUM_CHANNEL = 9  # MIDI channel 10

CLIP_S = 1.0
CLIPS_PER_LABEL = 182
GM_VELOCITY = (40, 127)
SONIC_SPEED = (0.94, 1.06)
# `--variety wide` (opt-in): softer hits and more detuned one-shots (every kit is already used).
VARIETIES = {
    "standard": {"gm_velocity": GM_VELOCITY, "sonic_speed": SONIC_SPEED},
    "wide": {"gm_velocity": (15, 127), "sonic_speed": (0.85, 1.15)},
}
ONSET_S = (0.02, 0.5)
PEAK_DBFS = (-12.0, -3.0)
NOISE_DBFS = (-66.0, -50.0)
SLOT_S = 1.25
LEAD_S = 0.05
HOLD_S = 0.9
CUT_S = 1.15
# Rendered length kept per hit: the clip length plus room for the head trimmed before the onset.
RENDER_S = 1.05
PREROLL_S = 0.001
ONSET_FLOOR_DB = -40.0
SILENT_PEAK = 1e-5
PROBE_VELOCITIES = (40, 120)
PROBE_SLOT_S = 0.75
PROBE_SIMILARITY = 0.9
KITS_PER_PROBE = 6
CLIPS_PER_JOB = 150
TASK_KEY = 3

Source = tuple[str, str | int]
"""(kit id, GM key or Sonic Pi sample name); kit ids are ``fluidr3:25`` or ``sonicpi-elec``."""


def _gm_kit_ids() -> list[str]:
    return [f"{font}:{preset}" for font, kits in GM_KITS.items() for preset in kits]


def _split_kit(kit: str) -> tuple[str, int]:
    font, preset = kit.split(":")
    return font, int(preset)


def _probe_gm(kits: list[str]) -> dict[Source, list[np.ndarray]]:
    """Every class key of ``kits`` (one soundfont) at each probe velocity, in one render."""
    font = _split_kit(kits[0])[0]
    keys = [k for keys in CLASSES.values() for k in keys]
    track = MidiTrack()
    slots = [(kit, key, v) for kit in kits for key in keys for v in PROBE_VELOCITIES]
    for i, (kit, key, velocity) in enumerate(slots):
        track.program(i * PROBE_SLOT_S, channel=DRUM_CHANNEL, program=_split_kit(kit)[1])
        track.note(i * PROBE_SLOT_S + LEAD_S, channel=DRUM_CHANNEL, key=key, velocity=velocity, duration_s=0.5)
        track.silence((i + 1) * PROBE_SLOT_S - LEAD_S, channel=DRUM_CHANNEL)
    audio = tools.render_midi(track.to_bytes(), font=font)
    probes: dict[Source, list[np.ndarray]] = {}
    for i, (kit, key, _) in enumerate(slots):
        start = round((i * PROBE_SLOT_S + LEAD_S) * dsp.SAMPLE_RATE)
        piece = audio[start : start + round(0.6 * dsp.SAMPLE_RATE)]
        probes.setdefault((kit, key), []).append(dsp.onset_aligned(piece, sr=dsp.SAMPLE_RATE))
    return probes


def _probe_sonic(kit: str) -> dict[Source, list[np.ndarray]]:
    probes: dict[Source, list[np.ndarray]] = {}
    for names in SONIC_KITS[kit].values():
        for name in names:
            audio, sr = tools.sonic_pi_sample(name)
            vector = dsp.onset_aligned(dsp.resample(audio, sr_in=sr), sr=dsp.SAMPLE_RATE)
            probes[(kit, name)] = [vector] * len(PROBE_VELOCITIES)
    return probes


def _drum(sample: str | int) -> str:
    """The drum a Sonic Pi sample records: ``drum_tom_lo_hard`` and ``drum_tom_lo_soft`` are one."""
    return str(sample).removesuffix("_hard").removesuffix("_soft")


def _probe_job(job: tuple[str, list[str]]) -> dict[Source, list[np.ndarray]]:
    kind, kits = job
    return _probe_gm(kits) if kind == "gm" else _probe_sonic(kits[0])


def sound_groups(map_fn: Callable = map) -> dict[str, list[list[Source]]]:
    """Per class, the sources grouped so each group is one recording (silent sources dropped)."""
    jobs: list[tuple[str, list[str]]] = []
    for font in GM_KITS:
        kits = [k for k in _gm_kit_ids() if k.startswith(f"{font}:")]
        jobs += [("gm", chunk) for chunk in common.chunks(kits, KITS_PER_PROBE)]
    jobs += [("sonic", [kit]) for kit in SONIC_KITS]
    probes: dict[Source, list[np.ndarray]] = {}
    for found in map_fn(_probe_job, jobs):
        probes.update(found)

    def same(a: Source, b: Source, label: str) -> bool:
        if a[0] in SONIC_KITS and b[0] in SONIC_KITS and _drum(a[1]) == _drum(b[1]):
            return True
        if label in ONE_DRUM_PER_KIT and a[0] == b[0] and a[0] not in SONIC_KITS:
            return True
        return any(float(x @ y) > PROBE_SIMILARITY for x, y in zip(probes[a], probes[b], strict=True))

    groups = {}
    for label, keys in CLASSES.items():
        sources: list[Source] = [(kit, key) for kit in _gm_kit_ids() for key in keys]
        sources += [(kit, name) for kit, classes in SONIC_KITS.items() for name in classes.get(label, ())]
        sources = [s for s in sources if all(np.any(v) for v in probes[s])]
        groups[label] = splits.group_by(sources, lambda a, b, label=label: same(a, b, label))
    return groups


def plan(*, scale: float, seed: int, map_fn: Callable = map, variety: str = "standard") -> common.TaskPlan:
    ranges = VARIETIES[variety]
    rng = np.random.default_rng([seed, TASK_KEY])
    groups = sound_groups(map_fn)
    owned: dict[str, dict[str, list[tuple[Source, ...]]]] = {}
    for label in LABELS:
        dealt = splits.assign_groups([tuple(g) for g in groups[label]], rng)
        owned[label] = {s: [g for g, gs in dealt.items() if gs == s] for s in splits.SPLITS}
    counts = splits.split_counts(max(3, round(CLIPS_PER_LABEL * scale)))

    clips: list[common.Clip] = []
    for split in splits.SPLITS:
        for label in LABELS:
            for group in splits.cycle(owned[label][split], counts[split], rng):
                kit, what = group[int(rng.integers(len(group)))]
                clips.append(_plan_clip(rng, label, split, kit, what, len(clips), seed, ranges))
                # Group folds keep one recording's clips together, like the splits do.
                clips[-1]["group"] = f"recording:{label}:{group[0][0]}/{group[0][1]}"
    gm = sorted((c for c in clips if "velocity" in c), key=lambda c: (c["kit"], c["index"]))
    sonic = [c for c in clips if "velocity" not in c]
    jobs = [
        {"task": "drums", "font": _split_kit(chunk[0]["kit"])[0], "clips": chunk}
        for font in GM_KITS
        for chunk in common.chunks([c for c in gm if c["kit"].startswith(f"{font}:")], CLIPS_PER_JOB)
    ]
    jobs += [{"task": "drums", "font": None, "clips": chunk} for chunk in common.chunks(sonic, CLIPS_PER_JOB)]
    parameters = {
        "clip_s": CLIP_S, "clips_per_label": CLIPS_PER_LABEL, "scale": scale, "classes": CLASSES,
        "variety": variety, "gm_velocity": ranges["gm_velocity"], "sonic_speed": ranges["sonic_speed"],
        "onset_s": ONSET_S, "peak_dbfs": PEAK_DBFS,
        "noise_dbfs": NOISE_DBFS, "probe_velocities": PROBE_VELOCITIES, "probe_similarity": PROBE_SIMILARITY,
        "fonts": {f: str(tools.SOUNDFONTS[f]) for f in GM_KITS}, "peak_ceiling_dbfs": dsp.PEAK_CEILING_DBFS,
    }  # fmt: skip
    recordings = {
        label: {s: [sorted(f"{kit}/{what}" for kit, what in g) for g in owned[label][s]] for s in splits.SPLITS}
        for label in LABELS
    }
    return common.TaskPlan(
        name="drums",
        labels=LABELS,
        clip_s=CLIP_S,
        jobs=jobs,
        parameters=parameters,
        split_sources={
            "recordings_per_split": {label: {s: len(v) for s, v in r.items()} for label, r in recordings.items()},
            "recordings": recordings,
        },
    )


def _plan_clip(
    rng: np.random.Generator,
    label: str,
    split: str,
    kit: str,
    what: str | int,
    index: int,
    seed: int,
    ranges: dict[str, tuple[float, float]],
) -> common.Clip:
    clip: common.Clip = {
        "index": index, "label": label, "split": split, "kit": kit,
        "onset_s": round(float(rng.uniform(*ONSET_S)), 4), "peak_dbfs_target": round(float(rng.uniform(*PEAK_DBFS)), 2),
        "noise": str(rng.choice(list(common.NOISE_COLOURS))),
        "noise_dbfs": round(float(rng.uniform(*NOISE_DBFS)), 2), "seed": [seed, TASK_KEY, index],
    }  # fmt: skip
    if isinstance(what, str):
        clip.update(sample=what, speed=round(float(rng.uniform(*ranges["sonic_speed"])), 4))
        name = f"{kit}-{what}"
    else:
        font, preset = _split_kit(kit)
        clip.update(key=int(what), velocity=int(rng.integers(ranges["gm_velocity"][0], ranges["gm_velocity"][1] + 1)))
        name = f"{font}-{GM_KITS[font][preset]}-k{int(what):03d}"
    clip["path"] = f"audio/{split}/{label}/{common.slug(name)}-{index:05d}.flac"
    return clip


def _sonic_hits(clips: list[common.Clip]) -> list[np.ndarray]:
    hits = []
    for clip in clips:
        audio, sr = tools.sonic_pi_sample(clip["sample"])
        # Resampling from a rate scaled by ``speed`` plays the sample that much faster and higher.
        hits.append(dsp.resample(audio, sr_in=sr * clip["speed"])[: round(RENDER_S * dsp.SAMPLE_RATE)])
    return hits


def _gm_hits(font: str, clips: list[common.Clip], velocities: list[int]) -> list[np.ndarray]:
    track = MidiTrack()
    for i, (clip, velocity) in enumerate(zip(clips, velocities, strict=True)):
        track.program(i * SLOT_S, channel=DRUM_CHANNEL, program=_split_kit(clip["kit"])[1])
        track.note(i * SLOT_S + LEAD_S, channel=DRUM_CHANNEL, key=clip["key"], velocity=velocity, duration_s=HOLD_S)
        track.silence(i * SLOT_S + CUT_S, channel=DRUM_CHANNEL)
    audio = tools.render_midi(track.to_bytes(), font=font)
    starts = [round((i * SLOT_S + LEAD_S) * dsp.SAMPLE_RATE) for i in range(len(clips))]
    return [audio[s : s + round(RENDER_S * dsp.SAMPLE_RATE)] for s in starts]


def _silent(x: np.ndarray) -> bool:
    return not np.max(np.abs(x), initial=0.0) > SILENT_PEAK


def render(job: dict[str, Any], task_dir: str) -> list[common.Clip]:
    """Render, align and level one job's hits.

    The hit is cut to start ``PREROLL_S`` before its acoustic onset (first sample within 40 dB of
    its peak), and that onset is placed exactly at ``onset_s``: neither fluidsynth's block timing
    nor the silence at the head of a sample file moves it. A GM note that renders silent (a
    missing velocity layer) is rendered again at velocity 100, and the record says so.
    """
    clips = job["clips"]
    if job["font"] is None:
        hits = _sonic_hits(clips)
        velocities: list[int | None] = [None] * len(clips)
    else:
        velocities = [clip["velocity"] for clip in clips]
        hits = _gm_hits(job["font"], clips, velocities)
        silent = [i for i, hit in enumerate(hits) if _silent(hit)]
        if silent:
            for i in silent:
                velocities[i] = 100
            retry = _gm_hits(job["font"], [clips[i] for i in silent], [100] * len(silent))
            for i, hit in zip(silent, retry, strict=True):
                hits[i] = hit
    num_samples = round(CLIP_S * dsp.SAMPLE_RATE)
    preroll = round(PREROLL_S * dsp.SAMPLE_RATE)
    records = []
    for clip, hit, velocity in zip(clips, hits, velocities, strict=True):
        if _silent(hit):
            raise tools.ToolError(f"{clip['kit']} {clip.get('key', clip.get('sample'))} renders silence")
        peak = float(np.max(np.abs(hit)))
        head = int(np.argmax(np.abs(hit) >= peak * dsp.db_to_amplitude(ONSET_FLOOR_DB)))
        hit = hit[max(0, head - preroll) :] * (dsp.db_to_amplitude(clip["peak_dbfs_target"]) / peak)
        start = round(clip["onset_s"] * dsp.SAMPLE_RATE) - min(head, preroll)
        mix = dsp.place(hit, num_samples=num_samples, start=start)
        mix += common.background(clip, num_samples=num_samples) * dsp.db_to_amplitude(clip["noise_dbfs"])
        mix = dsp.limit_peak(mix)
        dsp.write_flac(Path(task_dir) / clip["path"], mix)
        record = {**clip, **dsp.levels(mix)}
        if velocity is not None and velocity != clip["velocity"]:
            record.update(velocity=velocity, planned_velocity=clip["velocity"])
        records.append(record)
    return records
