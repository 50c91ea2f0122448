"""Corpus descriptions as inputs: lists, CSV, Kaldi wav.scp (+ segments), lhotse manifests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from adares.errors import ParameterError
from adares.inputs import InputItem, check_ids, describes_corpus, read_inputs

from .conftest import SR, synth


@pytest.fixture
def recordings(tmp_path) -> Path:
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "a.wav", synth(1.0, seed=1), SR)
    sf.write(audio / "sub" / "b.flac", synth(2.0, seed=2), SR)
    stereo = np.stack([synth(1.5, seed=3), synth(1.5, seed=4)], axis=1)
    sf.write(audio / "stereo.wav", stereo, SR)
    return audio


def test_a_list_of_paths(recordings):
    listing = recordings / "files.txt"
    listing.write_text("# the corpus\na.wav\n\nsub/b.flac\n" + str(recordings / "stereo.wav") + "\n")
    items = read_inputs(listing)
    assert items == [
        InputItem(id="a", path=recordings / "a.wav"),
        InputItem(id="sub/b", path=recordings / "sub" / "b.flac"),
        InputItem(id="stereo", path=recordings / "stereo.wav"),
    ]
    assert describes_corpus(listing) and not describes_corpus(recordings / "a.wav")
    assert not describes_corpus(recordings)


def test_a_csv_with_segments(recordings):
    table = recordings / "corpus.csv"
    table.write_text("id,path,start,end\nwhole,a.wav,,\nfirst,sub/b.flac,0.25,1.0\nrest,sub/b.flac,1.0,\n")
    items = read_inputs(table)
    assert [(i.id, i.start, i.end, i.is_segment) for i in items] == [
        ("whole", 0.0, None, False),
        ("first", 0.25, 1.0, True),
        ("rest", 1.0, None, True),
    ]
    assert items[1].path == recordings / "sub" / "b.flac"


def test_a_csv_needs_id_and_path(recordings):
    table = recordings / "corpus.csv"
    table.write_text("name,path\nx,a.wav\n")
    with pytest.raises(ParameterError, match="must name id and path"):
        read_inputs(table)
    table.write_text("id,path,start,end\nx,a.wav,0.5,0.2\n")
    with pytest.raises(ParameterError, match=r"corpus.csv:2: end \(0.2 s\) must lie after start"):
        read_inputs(table)


def test_kaldi_wav_scp_with_and_without_segments(recordings):
    scp = recordings / "wav.scp"
    scp.write_text(f"rec1 {recordings / 'a.wav'}\nrec2 sub/b.flac\n")
    assert [(i.id, i.path.name) for i in read_inputs(scp)] == [("rec1", "a.wav"), ("rec2", "b.flac")]
    (recordings / "segments").write_text("rec2-seg1 rec2 0.10 0.90\nrec2-seg2 rec2 0.90 -1\n")
    items = read_inputs(scp)
    assert [(i.id, i.path.name, i.start, i.end) for i in items] == [
        ("rec2-seg1", "b.flac", 0.1, 0.9),
        ("rec2-seg2", "b.flac", 0.9, None),
    ]


def test_kaldi_commands_and_unknown_recordings_are_refused(recordings):
    scp = recordings / "wav.scp"
    scp.write_text("rec1 sox a.wav -t wav - |\n")
    with pytest.raises(ParameterError, match="command or a Kaldi archive"):
        read_inputs(scp)
    scp.write_text("rec1 a.wav\n")
    (recordings / "segments").write_text("s1 rec9 0 1\n")
    with pytest.raises(ParameterError, match=r"segments:1: recording 'rec9' is not in wav.scp"):
        read_inputs(scp)


def test_lhotse_recordings_and_cuts_as_lhotse_writes_them(recordings, tmp_path):
    lhotse = pytest.importorskip("lhotse")
    recording_set = lhotse.RecordingSet.from_recordings(
        [
            lhotse.Recording.from_file(recordings / "a.wav", recording_id="ra"),
            lhotse.Recording.from_file(recordings / "stereo.wav", recording_id="rs"),
        ]
    )
    recording_set.to_file(tmp_path / "recordings.jsonl.gz")
    items = read_inputs(tmp_path / "recordings.jsonl.gz")
    assert [(i.id, i.path, i.start, i.end, i.channel) for i in items] == [
        ("ra", recordings / "a.wav", 0.0, None, None),
        ("rs", recordings / "stereo.wav", 0.0, None, None),
    ]
    cuts = lhotse.CutSet.from_cuts(
        [
            lhotse.MonoCut(id="c1", start=0.25, duration=0.5, channel=0, recording=recording_set["ra"]),
            lhotse.MonoCut(id="c2", start=0.5, duration=0.75, channel=1, recording=recording_set["rs"]),
        ]
    )
    cuts.to_file(tmp_path / "cuts.jsonl")
    items = read_inputs(tmp_path / "cuts.jsonl")
    assert [(i.id, i.path.name, i.start, i.end, i.channel) for i in items] == [
        ("c1", "a.wav", 0.25, 0.75, None),
        ("c2", "stereo.wav", 0.5, 1.25, 1),
    ]


def test_lhotse_sources_other_than_files_are_refused(tmp_path):
    manifest = tmp_path / "recordings.jsonl.gz"
    entry = {"id": "r", "sources": [{"type": "url", "channels": [0], "source": "http://x/a.wav"}]}
    with gzip.open(manifest, "wt") as handle:
        handle.write(json.dumps(entry) + "\n")
    with pytest.raises(ParameterError, match="source type 'url' is not a file"):
        read_inputs(manifest)


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        (["../escape"], "not a plain relative path"),
        (["/etc/passwd"], "absolute path"),
        (["a/./b"], "not a plain relative path"),
        (["a//b"], "not a plain relative path"),
        (["", "x"], "is empty"),
        (["a\\b"], "backslash"),
        (["same", "same"], "names more than one input"),
    ],
)
def test_ids_that_would_escape_or_collide_are_refused(ids, reason):
    with pytest.raises(ParameterError, match=reason):
        check_ids(ids, where="corpus.csv")


def test_bad_ids_are_refused_as_the_corpus_is_read(recordings):
    table = recordings / "corpus.csv"
    table.write_text("id,path\n../../x,a.wav\nok,a.wav\nok,sub/b.flac\n")
    with pytest.raises(ParameterError) as caught:
        read_inputs(table)
    message = str(caught.value)
    assert "'../../x' is not a plain relative path" in message and "'ok' names more than one input" in message


def test_a_list_entry_outside_its_folder_is_named_by_its_file(recordings, tmp_path):
    listing = recordings / "sub" / "files.lst"
    listing.write_text("../a.wav\nb.flac\n")
    assert [(i.id, i.path.resolve()) for i in read_inputs(listing)] == [
        ("a", (recordings / "a.wav").resolve()),
        ("b", (recordings / "sub" / "b.flac").resolve()),
    ]
