from pathlib import PurePosixPath

import numpy as np
import pytest

from adares.errors import ParameterError
from adares.features import Features
from adares.store import JsonlWriter, output_paths, read_hdf5_features, read_jsonl, rewrite_jsonl, write_features


def test_output_paths_replace_extension_unless_they_collide():
    sources = [PurePosixPath(p) for p in ["a/b.wav", "a/b.flac", "a/c.wav", "c.mp3", "d/c.wav"]]
    assert {k.as_posix(): v.as_posix() for k, v in output_paths(sources).items()} == {
        "a/b.wav": "a/b.wav.npz",
        "a/b.flac": "a/b.flac.npz",
        "a/c.wav": "a/c.npz",
        "c.mp3": "c.npz",
        "d/c.wav": "d/c.npz",
    }
    assert output_paths([PurePosixPath("x.wav")], format="hdf5")[PurePosixPath("x.wav")] == PurePosixPath("x.h5")
    with pytest.raises(ParameterError, match="unknown output format"):
        output_paths([], format="parquet")


def test_jsonl_append_survives_a_cut_line(tmp_path):
    path = tmp_path / "m.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"a": 1})
    with open(path, "a") as handle:
        handle.write('{"a": 2, "b"')  # a writer killed mid-line
    with JsonlWriter(path) as writer:
        writer.write({"a": 3})
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 3}]
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []
    rewrite_jsonl(path, [{"z": 0}])
    assert path.read_text() == '{"z": 0}\n'


def test_closed_writer_refuses(tmp_path):
    writer = JsonlWriter(tmp_path / "m.jsonl")
    writer.close()
    writer.close()
    with pytest.raises(ParameterError):
        writer.write({})


def test_hdf5_roundtrip(tmp_path):
    features = Features(
        mel=np.ones((3, 4)), spans=[[0, 10], [10, 20], [20, 25]], scores=np.ones(6) / 2, meta={"sr": 8000}
    )
    write_features(features, tmp_path / "x.h5", format="hdf5")
    back = read_hdf5_features(tmp_path / "x.h5")
    np.testing.assert_array_equal(back.mel, features.mel)
    np.testing.assert_array_equal(back.spans, features.spans)
    np.testing.assert_array_equal(back.scores, features.scores)
    assert back.meta == {"sr": 8000}
