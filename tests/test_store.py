from pathlib import PurePosixPath

import numpy as np
import pytest

from adares.errors import FeatureFileError, ParameterError
from adares.features import Features, load_features
from adares.store import JsonlWriter, Manifest, output_paths, read_jsonl, rewrite_jsonl, write_features


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
    back = load_features(tmp_path / "x.h5")
    np.testing.assert_array_equal(back.mel, features.mel)
    np.testing.assert_array_equal(back.spans, features.spans)
    np.testing.assert_array_equal(back.scores, features.scores)
    assert back.meta == {"sr": 8000}


def test_hdf5_file_that_is_corrupt_or_not_adares_raises_feature_file_error(tmp_path):
    import h5py

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # a signature, then nothing readable
    with pytest.raises(FeatureFileError, match=r"corrupt\.h5: cannot read feature file"):
        load_features(corrupt)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5.create_dataset("mel", data=np.ones((3, 4)))
    with pytest.raises(FeatureFileError, match=r"foreign\.h5: not an adares feature file \(missing meta, spans\)"):
        load_features(foreign)
    with pytest.raises(FeatureFileError, match=r"missing\.h5: file not found"):
        load_features(tmp_path / "missing.h5")


def record(source: str, status: str, config: str = "c1", **more) -> dict:
    return {"source": source, "status": status, "config": config, "run": "r", **more}


def test_manifest_latest_state_per_source(tmp_path):
    path = tmp_path / "manifest.jsonl"
    rewrite_jsonl(
        path,
        [
            record("a", "ok"),
            record("b", "failed", error="bad"),
            record("c", "ok"),
            record("a", "skipped"),
            record("c", "failed", error="worse"),
            record("d", "ok", config="c0"),
            {"status": "ok"},  # no source: not a file's record
        ],
    )
    with open(path, "a") as handle:
        handle.write('{"source": "b", "status": "o')  # a run killed mid-line
    manifest = Manifest(path)
    assert len(manifest.records) == 7
    assert {source: r["status"] for source, r in manifest.latest().items()} == {
        "a": "skipped",
        "b": "failed",
        "c": "failed",
        "d": "ok",
    }
    assert sorted(manifest.done()) == ["a", "d"]
    assert sorted(manifest.done(config="c1")) == ["a"]
    assert manifest.failure_report() == [
        {"source": "b", "error": "bad", "run": "r"},
        {"source": "c", "error": "worse", "run": "r"},
    ]


def test_manifest_appends_flushed_records_and_reports_failures(tmp_path):
    manifest = Manifest.of(tmp_path / "out")
    assert manifest.records == [] and not manifest.path.exists()
    with pytest.raises(ParameterError, match="not open"):
        manifest.append(record("a", "ok"))
    with manifest:
        manifest.append(record("a", "failed", error="bad"))
        assert list(read_jsonl(manifest.path)) == [record("a", "failed", error="bad")]  # on disk at once
        assert list(read_jsonl(manifest.failures_path)) == [{"source": "a", "error": "bad", "run": "r"}]
        manifest.append(record("a", "ok"))
    assert list(read_jsonl(manifest.failures_path)) == [{"source": "a", "error": "bad", "run": "r"}]
    manifest.compact_failures()  # a fixed file drops out of the report
    assert list(read_jsonl(manifest.failures_path)) == []
    assert [r["status"] for r in Manifest.of(tmp_path / "out").records] == ["failed", "ok"]
    manifest.clear()
    assert manifest.records == [] and manifest.path.read_text() == ""
