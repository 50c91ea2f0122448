"""Spoken keywords (Speech-Commands-like): 10 keywords, ``unknown`` words and ``silence``.

espeak-ng speaks each word with a base voice (English accents, and other languages reading the
English word) and a voice variant (``+m3``, ``+f2``, ``+croak``, ``+whisper``, ...). Variants decide
the split: a variant (and any variant that sounds identical to it) is in exactly one split.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import common, dsp, splits, tools

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
    "seven", "sheila", "six", "three", "tree", "two", "wow", "zero", "backward", "forward", "follow", "learn",
)  # fmt: skip
LABELS = (*KEYWORDS, "unknown", "silence")
ENGLISH_VOICES = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
# Other languages read the English spelling with their own phonology (or switch to English for
# words they know): accents the English voices lack.
OTHER_VOICES = ("de", "nl", "sv", "fr-fr", "it", "pt", "pl", "es")
OTHER_VOICE_SHARE = 0.25
# "fast" is a speed test, not a voice.
EXCLUDED_VARIANTS = ("fast",)
DEFAULT_VARIANT = "none"

CLIP_S = 1.0
CLIPS_PER_LABEL = 170
MAX_WORD_S = 0.95
RATE_WPM = (120, 210)
PITCH = (20, 80)
# `--variety wide` (opt-in; `standard` is the benchmark recipe): more accents (28 more languages
# reading the English spelling, half the spoken clips), wider speaking rate and voice pitch.
WIDE_OTHER_VOICES = (
    "af", "ca", "cs", "cy", "da", "eo", "et", "eu", "fi", "fr-be", "ga", "hr", "hu", "id", "is", "lt", "lv",
    "ms", "nb", "pt-br", "ro", "sk", "sl", "sq", "sw", "tr", "vi", "es-419",
)  # fmt: skip
VARIETIES = {
    "standard": {"other_voices": OTHER_VOICES, "other_voice_share": OTHER_VOICE_SHARE, "rate_wpm": RATE_WPM,
                 "pitch": PITCH},
    "wide": {"other_voices": OTHER_VOICES + WIDE_OTHER_VOICES, "other_voice_share": 0.5, "rate_wpm": (90, 260),
             "pitch": (0, 99)},
}  # fmt: skip
AMPLITUDE = (70, 150)
LEVEL_DBFS = (-28.0, -18.0)
SNR_DB = (5.0, 30.0)
NOISE_KINDS = {"ambience": 0.5, "white": 0.15, "pink": 0.2, "brown": 0.15}
PROBE_TEXT = "left right seven"
JOB_SIZE = 40
TASK_KEY = 1


def _voice(base: str, variant: str) -> str:
    return base if variant == DEFAULT_VARIANT else f"{base}+{variant}"


def _probe_variant(variant: str) -> str:
    audio, _ = tools.espeak(PROBE_TEXT, voice=_voice("en-us", variant), rate_wpm=175, pitch=50, amplitude=100)
    return hashlib.sha256(np.round(audio * 32768).astype("<i2").tobytes()).hexdigest()


def _stem(variant: str) -> str:
    # klatt2..klatt6, robosoft2..8, iven2..4 are one designer's small edits of one voice: treat a
    # family as one variant. m1..m8 and f1..f5 are distinct voices and stay apart.
    stem = re.sub(r"\d+$", "", variant).lower()
    return variant.lower() if len(stem) <= 1 else stem


def variant_groups(map_fn: Callable = map) -> list[list[str]]:
    """Voice variants that may share a split, merged by family name and by identical audio."""
    variants = [DEFAULT_VARIANT] + [v for v in tools.espeak_variants() if v not in EXCLUDED_VARIANTS]
    digests = dict(zip(variants, map_fn(_probe_variant, variants), strict=True))
    return splits.group_by(variants, lambda a, b: _stem(a) == _stem(b) or digests[a] == digests[b])


def plan(*, scale: float, seed: int, map_fn: Callable = map, variety: str = "standard") -> common.TaskPlan:
    ranges = VARIETIES[variety]
    rng = np.random.default_rng([seed, TASK_KEY])
    groups = variant_groups(map_fn)
    group_split = splits.assign_groups([tuple(g) for g in groups], rng)
    variants_in = {s: sorted(v for g, gs in group_split.items() if gs == s for v in g) for s in splits.SPLITS}
    ambience_split = splits.assign_groups(list(common.AMBIENCE), rng)
    ambience_in = {s: sorted(a for a, a_s in ambience_split.items() if a_s == s) for s in splits.SPLITS}
    counts = splits.split_counts(max(3, round(CLIPS_PER_LABEL * scale)))

    clips: list[common.Clip] = []
    for split in splits.SPLITS:
        for label in LABELS:
            n = counts[split]
            variants = splits.cycle(variants_in[split], n, rng)
            unknown = splits.cycle(UNKNOWN_WORDS, n, rng)
            for i in range(n):
                clips.append(
                    _plan_clip(rng, label, split, variants[i], unknown[i], ambience_in[split], len(clips), ranges)
                )
    family = {variant: group[0] for group in groups for variant in group}
    for clip in clips:
        clip["seed"] = [seed, TASK_KEY, clip["index"]]
        clip["group"] = group_of(clip, family)
    parameters = {
        "clip_s": CLIP_S, "clips_per_label": CLIPS_PER_LABEL, "scale": scale, "variety": variety,
        "rate_wpm": ranges["rate_wpm"], "pitch": ranges["pitch"], "amplitude": AMPLITUDE,
        "level_dbfs": LEVEL_DBFS, "snr_db": SNR_DB,
        "noise_kinds": NOISE_KINDS, "max_word_s": MAX_WORD_S, "english_voices": ENGLISH_VOICES,
        "other_voices": ranges["other_voices"], "other_voice_share": ranges["other_voice_share"],
        "unknown_words": UNKNOWN_WORDS,
        "peak_ceiling_dbfs": dsp.PEAK_CEILING_DBFS,
    }  # fmt: skip
    return common.TaskPlan(
        name="keywords",
        labels=LABELS,
        clip_s=CLIP_S,
        jobs=[{"task": "keywords", "clips": c} for c in common.chunks(clips, JOB_SIZE)],
        parameters=parameters,
        split_sources={"variants": variants_in, "ambience": ambience_in, "variant_groups": groups},
    )


def group_of(clip: common.Clip, family: dict[str, str]) -> str:
    """The speaker a clip is heard from, for group folds: its variant family (an ambience file for
    ``silence``; silence over generated noise shares no recording, so each such clip is its own group)."""
    if "variant" in clip:
        return f"variant:{family[clip['variant']]}"
    if clip["noise"] in common.NOISE_COLOURS:
        return f"noise:{clip['index']}"
    return f"ambience:{clip['noise']}"


def _plan_clip(
    rng: np.random.Generator,
    label: str,
    split: str,
    variant: str,
    unknown_word: str,
    ambience: list[str],
    index: int,
    ranges: dict[str, Any],
) -> common.Clip:
    kind = str(rng.choice(list(NOISE_KINDS), p=list(NOISE_KINDS.values())))
    clip: common.Clip = {
        "index": index,
        "label": label,
        "split": split,
        "noise": str(rng.choice(ambience)) if kind == "ambience" else kind,
        "snr_db": round(float(rng.uniform(*SNR_DB)), 2),
        "level_dbfs": round(float(rng.uniform(*LEVEL_DBFS)), 2),
        "start_fraction": round(float(rng.uniform()), 4),
    }
    if label == "silence":
        clip["path"] = f"audio/{split}/{label}/{common.slug(clip['noise'])}-{index:05d}.flac"
        return clip
    voices = ranges["other_voices"] if rng.uniform() < ranges["other_voice_share"] else ENGLISH_VOICES
    base = str(rng.choice(voices))
    clip.update(
        word=unknown_word if label == "unknown" else label,
        voice=base,
        variant=variant,
        rate_wpm=int(rng.integers(ranges["rate_wpm"][0], ranges["rate_wpm"][1] + 1)),
        pitch=int(rng.integers(ranges["pitch"][0], ranges["pitch"][1] + 1)),
        amplitude=int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1)),
    )
    clip["path"] = f"audio/{split}/{label}/{common.slug(base)}_{common.slug(variant)}-{index:05d}.flac"
    return clip


def _speak(clip: common.Clip) -> tuple[np.ndarray, dict[str, Any]]:
    """The trimmed word at 16 kHz, sped up (up to 3 times) until it fits the clip with a margin."""
    rate = clip["rate_wpm"]
    for _ in range(4):
        audio, sr = tools.espeak(
            clip["word"], voice=_voice(clip["voice"], clip["variant"]), rate_wpm=rate,
            pitch=clip["pitch"], amplitude=clip["amplitude"],
        )  # fmt: skip
        word = dsp.trim(dsp.resample(audio, sr_in=sr), sr=dsp.SAMPLE_RATE)
        if len(word) <= MAX_WORD_S * dsp.SAMPLE_RATE:
            break
        rate = round(rate * 1.25)
    if len(word) == 0:
        raise tools.ToolError(f"espeak-ng produced silence for {clip['word']!r} with {clip['voice']}+{clip['variant']}")
    return word, {"rate_wpm_used": rate, "word_s": round(len(word) / dsp.SAMPLE_RATE, 4)}


def render(job: dict[str, Any], task_dir: str) -> list[common.Clip]:
    """Render one job's clips into ``task_dir``; returns the clip records with measured levels."""
    num_samples = round(CLIP_S * dsp.SAMPLE_RATE)
    records = []
    for clip in job["clips"]:
        noise = common.background(clip, num_samples=num_samples)
        extra: dict[str, Any] = {}
        if clip["label"] == "silence":
            mix = noise * dsp.db_to_amplitude(clip["level_dbfs"] - clip["snr_db"])
        else:
            word, extra = _speak(clip)
            word = dsp.set_level(word, rms_dbfs=clip["level_dbfs"])
            start = round(clip["start_fraction"] * max(0, num_samples - len(word)))
            extra["start_s"] = round(start / dsp.SAMPLE_RATE, 4)
            mix = dsp.place(word, num_samples=num_samples, start=start)
            mix += noise * dsp.db_to_amplitude(clip["level_dbfs"] - clip["snr_db"])
        mix = dsp.limit_peak(mix)
        dsp.write_flac(Path(task_dir) / clip["path"], mix)
        records.append({**clip, **extra, **dsp.levels(mix)})
    return records
