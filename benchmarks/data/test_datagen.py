"""Tests of the dataset recipe helpers. Run: ``.venv/bin/python -m pytest benchmarks/data``.

Pure helpers are tested everywhere; the two render tests need espeak-ng / fluidsynth and skip
without them.
"""

from __future__ import annotations

import shutil
import struct

import make_datasets
import numpy as np
import pytest
import soundfile as sf
from datagen import common, drums, dsp, keywords, pitch, splits, tools
from datagen.smf import TICKS_PER_SECOND, MidiTrack, _varlen

# --- smf -------------------------------------------------------------------------------------


def _read_varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos


def _parse_format0(data: bytes) -> tuple[tuple[int, int, int], list[tuple[int, bytes]]]:
    """Reference reader: (format, tracks, division) and (absolute tick, message) per event."""
    assert data[:4] == b"MThd"
    length, fmt, ntracks, division = struct.unpack(">IHHH", data[4:14])
    assert length == 6 and data[14:18] == b"MTrk"
    (track_len,) = struct.unpack(">I", data[18:22])
    track = data[22 : 22 + track_len]
    assert len(track) == track_len
    events, pos, tick = [], 0, 0
    while pos < len(track):
        delta, pos = _read_varlen(track, pos)
        tick += delta
        if track[pos] == 0xFF:  # meta: type, length, payload
            size = track[pos + 2]
            events.append((tick, track[pos : pos + 3 + size]))
            pos += 3 + size
        else:
            size = 2 if track[pos] & 0xF0 == 0xC0 else 3
            events.append((tick, track[pos : pos + size]))
            pos += size
    return (fmt, ntracks, division), events


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (0x40, "40"), (0x7F, "7f"), (0x80, "8100"), (0x2000, "c000"), (0x3FFF, "ff7f"),
     (0x4000, "818000"), (0x0FFFFFFF, "ffffff7f")],
)  # fmt: skip
def test_varlen_matches_the_spec_examples(value: int, encoded: str) -> None:
    assert _varlen(value).hex() == encoded


def test_midi_track_roundtrips_through_a_reference_reader() -> None:
    track = MidiTrack()
    track.program(0.0, channel=9, program=25, bank=0)
    track.note(0.5, channel=9, key=38, velocity=100, duration_s=0.25)
    track.silence(1.0, channel=9)
    header, events = _parse_format0(track.to_bytes())
    assert header == (0, 1, 480)
    assert events[0] == (0, bytes.fromhex("ff5103") + (500_000).to_bytes(3, "big"))
    assert events[1:] == [
        (0, bytes([0xB9, 0, 0])),
        (0, bytes([0xC9, 25])),
        (TICKS_PER_SECOND // 2, bytes([0x99, 38, 100])),
        (3 * TICKS_PER_SECOND // 4, bytes([0x89, 38, 0])),
        (TICKS_PER_SECOND, bytes([0xB9, 120, 0])),
        (TICKS_PER_SECOND, bytes([0xB9, 121, 0])),
        (TICKS_PER_SECOND, bytes.fromhex("ff2f00")),
    ]


def test_midi_events_sort_by_time_and_keep_insertion_order_on_ties() -> None:
    track = MidiTrack()
    track.note(1.0, channel=0, key=60, velocity=90, duration_s=1.0)
    track.program(1.0, channel=0, program=3)  # added after the note, same tick: must stay after it
    track.note(0.0, channel=0, key=62, velocity=90, duration_s=0.5)
    _, events = _parse_format0(track.to_bytes())
    messages = [m for _, m in events[1:-1]]
    assert messages == [bytes([0x90, 62, 90]), bytes([0x80, 62, 0]), bytes([0x90, 60, 90]),
                        bytes([0xC0, 3]), bytes([0x80, 60, 0])]  # fmt: skip


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.note(0, channel=16, key=60, velocity=90, duration_s=1),
        lambda t: t.note(0, channel=0, key=128, velocity=90, duration_s=1),
        lambda t: t.note(0, channel=0, key=60, velocity=0, duration_s=1),
        lambda t: t.note(0, channel=0, key=60, velocity=90, duration_s=0),
        lambda t: t.note(-0.1, channel=0, key=60, velocity=90, duration_s=1),
        lambda t: t.program(0, channel=0, program=128),
    ],
)
def test_midi_rejects_out_of_range_values(call) -> None:
    with pytest.raises(ValueError):
        call(MidiTrack())


# --- dsp -------------------------------------------------------------------------------------

SR = dsp.SAMPLE_RATE


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return 0.5 * np.sin(2 * np.pi * freq * t)


def test_trim_keeps_the_sound_and_a_margin() -> None:
    x = np.concatenate([np.zeros(SR // 2), _tone(0.3), np.zeros(SR // 2)])
    y = dsp.trim(x, sr=SR)
    assert 0.3 * SR <= len(y) <= 0.3 * SR + 2 * round(0.02 * SR)
    assert np.allclose(y[np.abs(y) > 0], x[np.abs(x) > 0])


def test_active_rms_ignores_surrounding_silence() -> None:
    tone = _tone(0.2)
    padded = np.concatenate([np.zeros(SR), tone, np.zeros(SR)])
    assert dsp.active_rms(padded, sr=SR) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert dsp.active_rms(np.zeros(100), sr=SR) == 0.0


def test_set_level_and_limit_peak() -> None:
    y = dsp.set_level(_tone(0.5), rms_dbfs=-20.0)
    assert dsp.amplitude_to_db(dsp.active_rms(y, sr=SR)) == pytest.approx(-20.0, abs=1e-6)
    loud = 3.0 * _tone(0.1)
    assert np.max(np.abs(dsp.limit_peak(loud))) == pytest.approx(dsp.db_to_amplitude(dsp.PEAK_CEILING_DBFS))
    quiet = 0.1 * _tone(0.1)
    assert np.array_equal(dsp.limit_peak(quiet), quiet)  # never scaled up


def test_place_puts_sound_at_start_and_fades_what_overhangs() -> None:
    sound = np.ones(100)
    out = dsp.place(sound, num_samples=1000, start=10)
    assert np.array_equal(out[10:110], sound) and not out[:10].any() and not out[110:].any()
    cut = dsp.place(sound, num_samples=1000, start=950)
    assert cut[950] == 1.0 and cut[-1] == 0.0  # faded to zero at the clip end
    with pytest.raises(ValueError):
        dsp.place(sound, num_samples=1000, start=1000)


@pytest.mark.parametrize(("colour", "exponent"), sorted(common.NOISE_COLOURS.items()))
def test_coloured_noise_has_the_requested_spectral_slope(colour: str, exponent: float) -> None:
    rng = np.random.default_rng(0)
    noise = dsp.coloured_noise(rng, num_samples=2**16, exponent=exponent)
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0)
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise))
    band = (freqs > 1e-3) & (freqs < 0.4)
    slope = np.polyfit(np.log(freqs[band]), np.log(power[band] + 1e-30), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.1), colour


def test_excerpt_loops_short_sources() -> None:
    rng = np.random.default_rng(0)
    source = np.arange(10.0)
    piece = dsp.excerpt(rng, source, num_samples=25)
    assert len(piece) == 25
    assert np.array_equal(np.diff(piece) % 10, np.ones(24))  # consecutive samples, wrapping


def test_to_mono_averages_channels() -> None:
    x = np.random.default_rng(1).standard_normal((1000, 3))
    assert np.allclose(dsp.to_mono(x), x.mean(axis=1))
    assert np.array_equal(dsp.to_mono(x[:, 0]), x[:, 0])


def test_onset_aligned_matches_a_delayed_copy_not_another_sound() -> None:
    rng = np.random.default_rng(2)
    hit = rng.standard_normal(4000) * np.exp(-np.arange(4000) / 800)
    a = dsp.onset_aligned(np.concatenate([np.zeros(123), hit]), sr=SR)
    b = dsp.onset_aligned(np.concatenate([np.zeros(2000), 0.3 * hit]), sr=SR)
    other = dsp.onset_aligned(rng.standard_normal(4000) * np.exp(-np.arange(4000) / 800), sr=SR)
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert float(a @ b) == pytest.approx(1.0)
    assert abs(float(a @ other)) < 0.2
    assert not dsp.onset_aligned(np.zeros(10), sr=SR).any()


def test_write_flac_refuses_clipping(tmp_path) -> None:
    with pytest.raises(ValueError):
        dsp.write_flac(tmp_path / "x.flac", np.array([0.0, 1.5]))
    dsp.write_flac(tmp_path / "a" / "y.flac", 0.5 * _tone(0.1))
    info = sf.info(tmp_path / "a" / "y.flac")
    assert (info.samplerate, info.channels, info.format, info.subtype) == (SR, 1, "FLAC", "PCM_16")


# --- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [3, 10, 170, 182, 1001])
def test_split_counts(total: int) -> None:
    counts = splits.split_counts(total)
    assert sum(counts.values()) == total
    assert counts["validation"] == counts["test"] >= 1
    assert abs(counts["test"] - 0.15 * total) <= 0.5 + 1e-9 or total < 7


def test_assign_groups_deals_every_group_once() -> None:
    groups = [f"g{i}" for i in range(40)]
    dealt = splits.assign_groups(groups, np.random.default_rng(0))
    assert sorted(dealt) == sorted(groups)
    assert [list(dealt.values()).count(s) for s in splits.SPLITS] == [28, 6, 6]
    assert dealt == splits.assign_groups(groups, np.random.default_rng(0))
    with pytest.raises(ValueError):
        splits.assign_groups(["a", "b"], np.random.default_rng(0))


def test_group_by_is_transitive() -> None:
    items = [1, 2, 3, 10, 11, 20]
    groups = splits.group_by(items, lambda a, b: abs(a - b) == 1)
    assert sorted(map(sorted, groups)) == [[1, 2, 3], [10, 11], [20]]


def test_cycle_uses_every_item_equally() -> None:
    drawn = splits.cycle(list("abcde"), 23, np.random.default_rng(0))
    counts = [drawn.count(c) for c in "abcde"]
    assert len(drawn) == 23 and max(counts) - min(counts) <= 1


# --- task tables -----------------------------------------------------------------------------


def test_every_pitch_program_range_holds_all_pitch_classes() -> None:
    assert len(pitch.PROGRAMS) >= 90 and not set(pitch.PROGRAMS) & pitch.EXCLUDED_PROGRAMS
    for font in pitch.FONTS:
        for program in pitch.PROGRAMS:
            low, high = pitch.key_range(program, font)
            assert {k % 12 for k in range(low, high + 1)} == set(range(12)), (font, program)


def test_drum_classes_are_disjoint_and_enough() -> None:
    keys = [k for ks in drums.CLASSES.values() for k in ks]
    assert len(drums.LABELS) >= 10 and len(keys) == len(set(keys))
    sonic = [n for kit in drums.SONIC_KITS.values() for names in kit.values() for n in names]
    assert len(sonic) == len(set(sonic))
    assert all(label in drums.CLASSES for kit in drums.SONIC_KITS.values() for label in kit)


def test_keyword_labels_and_variant_families() -> None:
    assert len(keywords.LABELS) == 12 and not set(keywords.KEYWORDS) & set(keywords.UNKNOWN_WORDS)
    assert keywords._stem("klatt3") == keywords._stem("klatt") == "klatt"
    assert keywords._stem("m3") != keywords._stem("m4")


def test_parse_wav_stdout_ignores_placeholder_sizes() -> None:
    samples = np.array([0, 16384, -16384, 32767], dtype="<i2")
    header = (b"RIFF" + b"\xff\xff\xff\x7f" + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16)
              + b"data" + b"\xff\xff\xff\x7f")  # fmt: skip
    audio, sr = tools._parse_wav_stdout(header + samples.tobytes())
    assert sr == 22050 and np.array_equal(audio, samples / 32768.0)


def test_check_splits_catches_a_leak() -> None:
    records = [
        {"label": label, "split": split, "font": "f", "program": n}
        for n, split in enumerate(splits.SPLITS)
        for label in pitch.LABELS
    ]
    make_datasets.check_splits("pitch", records)
    records[-1]["program"] = 0  # one test clip from a training instrument
    with pytest.raises(RuntimeError, match="more than one split"):
        make_datasets.check_splits("pitch", records)
    with pytest.raises(RuntimeError, match="missing labels"):
        make_datasets.check_splits("pitch", records[:-1])


# --- rendering (needs the Debian tools) --------------------------------------------------------

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not tools.SOUNDFONTS["timgm6mb"].exists(), reason="fluidsynth/soundfont"
)


@needs_espeak
def test_keyword_render_is_deterministic(tmp_path) -> None:
    clip = {"index": 0, "label": "yes", "split": "train", "noise": "pink", "snr_db": 20.0, "level_dbfs": -20.0,
            "start_fraction": 0.5, "word": "yes", "voice": "en-us", "variant": "m3", "rate_wpm": 170,
            "pitch": 50, "amplitude": 100, "path": "audio/train/yes/a.flac", "seed": [0, 1, 0]}  # fmt: skip
    job = {"task": "keywords", "clips": [clip]}
    (first,) = keywords.render(job, str(tmp_path / "a"))
    keywords.render(job, str(tmp_path / "b"))
    a, sr = sf.read(tmp_path / "a" / clip["path"])
    b, _ = sf.read(tmp_path / "b" / clip["path"])
    assert sr == SR and len(a) == SR and np.array_equal(a, b)
    assert first["peak_dbfs"] <= dsp.PEAK_CEILING_DBFS + 0.01
    assert 0 < first["start_s"] < 1 - first["word_s"]


@needs_fluidsynth
def test_pitch_render_sounds_the_planned_note(tmp_path) -> None:
    clips = [
        {"index": i, "label": pitch.LABELS[key % 12], "split": "train", "font": "timgm6mb", "program": 0,
         "key": key, "velocity": 100, "duration_s": 1.0, "onset_s": 0.25, "level_dbfs": -20.0,
         "seed": [0, 2, i], "path": f"audio/{i}.flac"}
        for i, key in enumerate((57, 64))
    ]  # fmt: skip
    records = pitch.render({"task": "pitch", "font": "timgm6mb", "clips": clips}, str(tmp_path))
    for clip, record in zip(clips, records, strict=True):
        audio, _ = sf.read(tmp_path / clip["path"])
        assert len(audio) == 2 * SR and not audio[: round(0.24 * SR)].any()  # silent before the onset
        segment = audio[round(0.3 * SR) : round(1.1 * SR)] * np.hanning(round(0.8 * SR))
        spectrum = np.abs(np.fft.rfft(segment, n=8 * len(segment)))
        freqs = np.fft.rfftfreq(8 * len(segment), 1 / SR)
        expected = 440.0 * 2 ** ((clip["key"] - 69) / 12)
        peak = freqs[np.argmax(spectrum * (freqs < 2000))]
        # The strongest partial is the fundamental or a low harmonic of it.
        ratio = peak / expected
        assert abs(ratio - round(ratio)) < 0.03 and round(ratio) >= 1, (peak, expected)
        assert record["peak_dbfs"] <= dsp.PEAK_CEILING_DBFS + 0.01


@needs_fluidsynth
def test_pitch_silent_key_moves_an_octave_toward_the_middle(tmp_path) -> None:
    # TimGM6mb's whistle has no sample above key 78: key 84 must come back as key 72 (same class).
    clip = {"index": 0, "label": "C", "split": "train", "font": "timgm6mb", "program": 78, "key": 84,
            "velocity": 100, "duration_s": 0.5, "onset_s": 0.1, "level_dbfs": -20.0, "seed": [0, 2, 0],
            "path": "audio/w.flac"}  # fmt: skip
    (record,) = pitch.render({"task": "pitch", "font": "timgm6mb", "clips": [clip]}, str(tmp_path))
    assert (record["key"], record["planned_key"]) == (72, 84)
    assert np.abs(sf.read(tmp_path / "audio/w.flac")[0]).max() > 0.01


@needs_fluidsynth
@pytest.mark.skipif(not (tools.SONIC_PI_SAMPLES / "bd_haus.flac").exists(), reason="sonic-pi-samples")
def test_drum_hits_sound_exactly_at_the_planned_onset(tmp_path) -> None:
    base = {"split": "train", "peak_dbfs_target": -6.0, "noise": "white", "noise_dbfs": -100.0}
    gm = {**base, "index": 0, "label": "snare", "kit": "timgm6mb:0", "key": 38, "velocity": 100, "onset_s": 0.3125,
          "seed": [0, 3, 0], "path": "audio/gm.flac"}  # fmt: skip
    sonic = {**base, "index": 1, "label": "kick", "kit": "sonicpi-bd-sn", "sample": "bd_haus", "speed": 1.0,
             "onset_s": 0.0625, "seed": [0, 3, 1], "path": "audio/sonic.flac"}  # fmt: skip
    drums.render({"task": "drums", "font": "timgm6mb", "clips": [gm]}, str(tmp_path))
    drums.render({"task": "drums", "font": None, "clips": [sonic]}, str(tmp_path))
    for clip in (gm, sonic):
        audio, _ = sf.read(tmp_path / clip["path"])
        onset = int(np.argmax(np.abs(audio) >= np.abs(audio).max() * dsp.db_to_amplitude(drums.ONSET_FLOOR_DB)))
        assert abs(onset - clip["onset_s"] * SR) <= 1, clip["path"]
        assert np.abs(audio).max() == pytest.approx(dsp.db_to_amplitude(-6.0), rel=0.01)
