"""Decoder fuzzing in the test run: mutated files of every format, each loaded or refused by name.

A bounded, deterministic slice of what ``make fuzz`` runs (benchmarks/fuzz.py, tens of thousands of
cases): :func:`adares.load` must return finite float32 samples or raise AudioDecodeError with a
one-line reason, and the pipeline must record each refused file in failures.jsonl with that reason.
The files in tests/data/fuzz are the smallest (shrunk) file of every failure class the long run
found, each with its expected reason; the tests after them pin what fuzzing found wrong.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adares import audio
from adares.audio import load
from adares.errors import AudioDecodeError
from adares.features import load_features
from adares.pipeline import ExtractConfig, extract
from adares.store import FAILURES_NAME, MANIFEST_NAME, read_jsonl
from tests.fuzz_audio import MUTATIONS, cases, check, reason_class, seed_files

FUZZ_DATA = Path(__file__).parent / "data" / "fuzz"
REGRESSIONS = json.loads((FUZZ_DATA / "expected.json").read_text())


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return seed_files()


def test_every_seed_loads_and_covers_the_formats(tmp_path, seeds):
    assert {"wav16", "wavfloat", "flac", "vorbis", "aiff"} <= set(seeds)
    for name, data in seeds.items():
        case = next(case for case in cases(50, seeds=seeds) if case.seed_name == name)
        path = tmp_path / f"seed{case.suffix}"
        path.write_bytes(data)
        assert check(path).kind == "ok", name


def test_cases_are_deterministic_and_use_every_mutation(seeds):
    first = list(cases(200, seed=7, seeds=seeds))
    assert [c.data for c in first[150:]] == [c.data for c in cases(50, seed=7, seeds=seeds, start=150)]
    assert {m for c in first for m in c.mutations} == set(MUTATIONS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [0, 1])
def test_mutated_files_load_or_fail_by_name(tmp_path, seeds, seed):
    kinds = {"ok": 0, "named": 0}
    for case in cases(250, seed=seed, seeds=seeds):
        path = tmp_path / f"case{case.index}{case.suffix}"
        path.write_bytes(case.data)
        outcome = check(path)
        assert outcome.kind in kinds, f"{case.label}: {outcome.detail}"
        kinds[outcome.kind] += 1
    assert kinds["ok"] and kinds["named"]  # the mutations neither all break nor all spare the files


@pytest.mark.parametrize("example", REGRESSIONS, ids=[example["file"] for example in REGRESSIONS])
def test_smallest_file_of_each_failure_class(example):
    outcome = check(FUZZ_DATA / example["file"])
    assert (outcome.kind, outcome.detail) == ("named", example["class"])


@pytest.mark.timeout(300)
def test_the_pipeline_records_every_refused_file_with_its_reason(tmp_path, seeds):
    audio = tmp_path / "in"
    audio.mkdir()
    for case in cases(40, seed=3, seeds=seeds):
        (audio / f"case{case.index:02d}{case.suffix}").write_bytes(case.data)
    expected = {path.name: check(path) for path in audio.iterdir()}
    out = tmp_path / "out"
    extract(audio, out, config=ExtractConfig(model="none"), jobs=1)
    failures = {record["source"]: record["error"] for record in read_jsonl(out / FAILURES_NAME)}
    done = {record["source"]: record for record in read_jsonl(out / MANIFEST_NAME) if record["status"] == "ok"}
    assert set(failures) | set(done) == set(expected) and not set(failures) & set(done)
    assert failures and done
    for name, error in failures.items():
        assert "\n" not in error
        if expected[name].kind == "named":
            assert reason_class(error) == expected[name].detail
    for name, record in done.items():
        assert np.isfinite(load_features(out / record["output"]).mel).all(), name


# --------------------------------------------------------------------------------------------
# what fuzzing found


def _wav(path: Path, *, rate: int = 16000, channels: int = 1, frames: int = 400) -> Path:
    """A 16-bit PCM WAV whose header says ``rate`` and ``channels``, with ``frames`` frames of a tone."""
    tone = (3000 * np.sin(np.arange(frames * channels) / 7)).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2 & 0xFFFFFFFF, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(tone)) + tone
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.mark.parametrize("rate", [1, 2, 999])
def test_a_header_rate_too_low_is_refused_before_resampling(tmp_path, rate):
    # at 1 Hz, 4000 frames resampled to 16 kHz were 64 million samples (256 MB) from a 16 kB file
    with pytest.raises(AudioDecodeError) as error:
        load(_wav(tmp_path / "slow.wav", rate=rate, frames=4000))
    assert error.value.reason == (
        f"implausible sample rate in the header: {rate} Hz (1 kHz to 1 MHz is accepted); the header is probably corrupt"
    )


@pytest.mark.parametrize("rate", [1_000_001, 1 << 30, 0x7FFFFFFF])
def test_a_header_rate_too_high_is_refused(tmp_path, rate):
    # 400 frames at 2^30 Hz resampled to nothing: load raised IndexError
    with pytest.raises(AudioDecodeError, match="implausible sample rate in the header"):
        load(_wav(tmp_path / "fast.wav", rate=rate))


def test_rates_at_the_limits_still_load(tmp_path):
    for rate in (1000, 1_000_000):
        samples, sr = load(_wav(tmp_path / f"r{rate}.wav", rate=rate, frames=4000), sr=None)
        assert sr == rate and len(samples) == 4000


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rate", 0, "cannot decode (invalid sample rate or channel count in the header)"),
        ("rate", 0x80000000, "cannot decode (invalid sample rate or channel count in the header)"),
    ],
)
def test_libsndfile_messages_that_say_nothing_are_replaced(tmp_path, field, value, reason):
    # libsndfile says "SF_INFO struct incomplete"
    path = _wav(tmp_path / "zero.wav")
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", value)
    path.write_bytes(bytes(data))
    with pytest.raises(AudioDecodeError) as error:
        load(path)
    assert error.value.reason == reason


def test_a_stream_libsndfile_cannot_sync_to_is_not_called_missing(tmp_path):
    # libsndfile's MPEG reader says "File does not exist or is not a regular file" of a file that exists
    path = tmp_path / "one.mp3"
    path.write_bytes(b"\xff")
    outcome = check(path)
    assert outcome.kind == "named" and "does not exist" not in outcome.message


def test_many_channels_are_read_in_bounded_blocks(tmp_path, monkeypatch):
    # a header declaring 200 channels: each read holds at most _BLOCK_SAMPLES samples (it allocated
    # 200 x 2^18 floats, 210 MB, per read; 1024 channels would be 1 GB)
    reads = []
    original = audio.sf.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(audio.sf.SoundFile, "read", read)
    samples, _ = load(_wav(tmp_path / "wide.wav", channels=200, frames=3000), mono=False)
    assert samples.shape == (200, 3000) and reads and max(reads) * 200 <= audio._BLOCK_SAMPLES
    expected = (3000 * np.sin(np.arange(600) / 7)).astype("<i2") / 32768
    np.testing.assert_array_equal(samples[:, :3].T.ravel(), expected.astype(np.float32))


def test_libmpg123_notes_on_a_corrupt_mp3_stay_off_stderr():
    # libmpg123 printed "Note: Illegal Audio-MPEG-Header ..." lines straight to file descriptor 2,
    # a few per bad frame, among adares extract's progress; stderr must work again afterwards
    corrupt = FUZZ_DATA / next(e["file"] for e in REGRESSIONS if e["file"].endswith(".mp3") and e["bytes"] > 100)
    script = (
        "import os, sys, soundfile\n"
        "from adares.audio import info, load\nfrom adares.errors import AudioDecodeError\n"
        "try:\n    soundfile.read(sys.argv[1])\nexcept Exception:\n    pass\n"
        "os.write(2, b'--\\n')\n"
        "info(sys.argv[1])\n"
        "try:\n    load(sys.argv[1])\nexcept AudioDecodeError:\n    pass\n"
        "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(corrupt)], capture_output=True, text=True, timeout=60)
    raw, through_adares = done.stderr.split("--\n")
    assert raw.strip()  # the file does make libmpg123 talk
    assert through_adares == "after\n"
