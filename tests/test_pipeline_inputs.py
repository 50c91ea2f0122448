"""Corpora described in a file (list, CSV, Kaldi, lhotse) through ``extract`` and ``adares extract``."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from adares.cli.main import main
from adares.errors import ParameterError
from adares.features import load_features
from adares.pipeline import ExtractConfig, extract
from adares.store import Manifest

from .conftest import SR, synth


@pytest.fixture
def recordings(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "long.wav", synth(3.0, seed=1), SR, subtype="PCM_16")
    sf.write(audio / "sub" / "other.flac", synth(1.2, seed=2), SR, subtype="PCM_16")
    return audio


@pytest.mark.parametrize("model", ["none", "flux"])
def test_a_segment_equals_its_slice_with_spans_offset(recordings, tmp_path, model):
    table = recordings / "corpus.csv"
    table.write_text(
        "id,path,start,end\nspk1/utt.a,long.wav,0.5,1.75\nspk1/utt.b,long.wav,1.75,\nwhole,sub/other.flac,,\n"
    )
    config = ExtractConfig(frontend={"n_mels": 32}, model=model, reduction=0.5)
    summary = extract(table, tmp_path / "out", config=config, jobs=1)
    assert (summary.done, summary.failed) == (3, 0)
    # the same audio, sliced by hand into files of their own
    samples, _ = sf.read(recordings / "long.wav", dtype="float32")
    slices = tmp_path / "slices"
    slices.mkdir()
    sf.write(slices / "a.wav", samples[8000:28000], SR, subtype="FLOAT")
    sf.write(slices / "b.wav", samples[28000:], SR, subtype="FLOAT")
    extract(slices, tmp_path / "sliced", config=config, jobs=1)
    for name, offset in (("utt.a", 8000), ("utt.b", 28000)):
        segment = load_features(tmp_path / "out" / "spk1" / f"{name}.npz")
        alone = load_features(tmp_path / "sliced" / f"{name[-1]}.npz")
        np.testing.assert_array_equal(segment.mel, alone.mel)
        np.testing.assert_array_equal(segment.spans, alone.spans + offset)
        assert segment.meta["offset_samples"] == offset and segment.meta["source"] == f"spk1/{name}"
        assert segment.meta["recording"].endswith("long.wav")
    whole = load_features(tmp_path / "out" / "whole.npz")
    assert whole.spans[0, 0] == 0 and "offset_samples" not in whole.meta
    records = Manifest.of(tmp_path / "out").done()
    assert records["spk1/utt.a"]["start"] == 0.5 and records["spk1/utt.a"]["end"] == 1.75
    assert records["spk1/utt.b"]["end"] is None and "start" not in records["whole"]
    rerun = extract(table, tmp_path / "out", config=config, jobs=1)
    assert (rerun.done, rerun.skipped) == (0, 3)


def test_kaldi_segments_through_the_command(recordings, tmp_path):
    (recordings / "wav.scp").write_text("rec1 long.wav\nrec2 sub/other.flac\n")
    (recordings / "segments").write_text("rec1-0 rec1 0.00 1.00\nrec1-1 rec1 1.00 -1\nrec2-0 rec2 0.2 0.9\n")
    result = CliRunner().invoke(
        main, ["extract", str(recordings / "wav.scp"), str(tmp_path / "out"), "--model", "none", "-j", "1", "-q"]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").glob("*.npz"))
    assert names == ["rec1-0.npz", "rec1-1.npz", "rec2-0.npz"]
    last = load_features(tmp_path / "out" / "rec1-1.npz")
    assert last.spans[0, 0] == SR and last.spans[-1, 1] == 3 * SR


def test_a_list_of_paths(recordings, tmp_path):
    (recordings / "files.txt").write_text("long.wav\nsub/other.flac\n")
    summary = extract(recordings / "files.txt", tmp_path / "out", config=ExtractConfig(model="none"), jobs=1)
    assert summary.done == 2
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npz")) == [
        "long.npz",
        "sub/other.npz",
    ]


def test_lhotse_cuts_with_a_channel(recordings, tmp_path):
    lhotse = pytest.importorskip("lhotse")
    stereo = np.stack([synth(2.0, seed=5), synth(2.0, seed=6) * 0.1], axis=1)
    sf.write(recordings / "stereo.wav", stereo, SR, subtype="FLOAT")
    recording = lhotse.Recording.from_file(recordings / "stereo.wav", recording_id="st")
    cuts = lhotse.CutSet.from_cuts(
        [lhotse.MonoCut(id="right", start=0.5, duration=1.0, channel=1, recording=recording)]
    )
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    extract(tmp_path / "cuts.jsonl.gz", tmp_path / "out", config=ExtractConfig(model="none"), jobs=1)
    features = load_features(tmp_path / "out" / "right.npz")
    expected = ExtractConfig(model="none").build_extractor()(stereo[8000:24000, 1].copy())
    np.testing.assert_allclose(features.mel, expected.mel, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(features.spans, expected.spans + 8000)


def test_bad_ids_are_refused_before_any_work(recordings, tmp_path):
    table = recordings / "corpus.csv"
    table.write_text("id,path\n../outside,long.wav\n")
    with pytest.raises(ParameterError, match="'../outside' is not a plain relative path"):
        extract(table, tmp_path / "out", config=ExtractConfig(model="none"), jobs=1)
    assert not (tmp_path / "out").exists()
    table.write_text("id,path\nx,long.wav\nx,sub/other.flac\n")
    result = CliRunner().invoke(main, ["extract", str(table), str(tmp_path / "out"), "--model", "none", "-j", "1"])
    assert result.exit_code == 2 and "'x' names more than one input" in result.output
    assert not (tmp_path / "out").exists()


def test_a_segment_past_the_recording_fails_alone(recordings, tmp_path):
    table = recordings / "corpus.csv"
    table.write_text("id,path,start,end\nok,long.wav,0,1\nlate,long.wav,2.5,4.0\n")
    summary = extract(table, tmp_path / "out", config=ExtractConfig(model="none"), jobs=1)
    assert (summary.done, summary.failed) == (1, 1)
    assert "after the recording's end" in summary.failures[0]["error"]
