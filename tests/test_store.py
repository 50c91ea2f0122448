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
    assert (len(manifest), manifest.superseded) == (6, 2)  # file records; a and c were done again
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
    assert len(manifest) == 0 and not manifest.path.exists()
    with pytest.raises(ParameterError, match="not open"):
        manifest.append(record("a", "ok"))
    with manifest:
        pass
    assert not manifest.path.exists() and not manifest.failures_path.exists()  # nothing written, nothing made
    with manifest:
        manifest.append(record("a", "failed", error="bad"))
        assert list(read_jsonl(manifest.path)) == [record("a", "failed", error="bad")]  # on disk at once
        assert list(read_jsonl(manifest.failures_path)) == [{"source": "a", "error": "bad", "run": "r"}]
        manifest.append(record("a", "ok"))
    assert list(read_jsonl(manifest.failures_path)) == [{"source": "a", "error": "bad", "run": "r"}]
    manifest.compact_failures()  # a fixed file drops out of the report
    assert list(read_jsonl(manifest.failures_path)) == []
    assert [r["status"] for r in read_jsonl(manifest.path)] == ["failed", "ok"]
    assert len(Manifest.of(tmp_path / "out")) == 2
    manifest.clear()
    assert len(manifest) == 0 and manifest.path.read_text() == ""


# --- writers: dtype, streamed features, shards ---------------------------------------------------


def _features(frames=40, mels=8, *, scores=True, seed=0):
    rng = np.random.default_rng(seed)
    bounds = np.arange(frames + 1, dtype=np.int64) * 80
    return Features(
        mel=rng.standard_normal((frames, mels)).astype(np.float32),
        spans=np.stack([bounds[:-1], bounds[1:]], axis=1),
        scores=rng.random(2 * frames).astype(np.float32) if scores else None,
        meta={"sr": 16000, "source": "a.wav"},
    )


def _streamed(features, *, piece=7):
    from adares.extractor import StreamedFeatures

    def rows():
        for first in range(0, features.num_frames, piece):
            yield features.mel[first : first + piece]

    return StreamedFeatures(
        num_mels=features.num_mels, spans=features.spans, scores=features.scores, meta=features.meta, rows=rows
    )


def _same(a, b):
    assert np.array_equal(a.mel, b.mel) and np.array_equal(a.spans, b.spans)
    assert (a.scores is None) == (b.scores is None)
    assert a.scores is None or np.array_equal(a.scores, b.scores)
    assert a.meta == b.meta


@pytest.mark.parametrize("format", ["npz", "hdf5"])
def test_streamed_features_write_the_same_file_content_as_in_memory(tmp_path, format):
    features = _features()
    write_features(features, tmp_path / "memory.x", format=format)
    write_features(_streamed(features), tmp_path / "streamed.x", format=format)
    suffix = ".npz" if format == "npz" else ".h5"
    (tmp_path / "memory.x").rename(tmp_path / f"memory{suffix}")
    (tmp_path / "streamed.x").rename(tmp_path / f"streamed{suffix}")
    _same(load_features(tmp_path / f"memory{suffix}"), load_features(tmp_path / f"streamed{suffix}"))
    if format == "npz":
        with np.load(tmp_path / "streamed.npz") as data:  # a plain npz to numpy
            assert data["mel"].dtype == np.float32 and data["mel"].shape == (40, 8)


def test_float16_halves_mel_and_records_the_dtype(tmp_path):
    features = _features(frames=400, mels=64, scores=False)
    write_features(features, tmp_path / "a.npz")
    write_features(features, tmp_path / "b.npz", dtype="float16")
    write_features(_streamed(features), tmp_path / "c.npz", dtype="float16")
    half = load_features(tmp_path / "b.npz")
    assert half.meta["dtype"] == "float16" and "dtype" not in load_features(tmp_path / "a.npz").meta
    assert np.array_equal(half.mel, features.mel.astype(np.float16).astype(np.float32))
    assert (tmp_path / "b.npz").stat().st_size < 0.6 * (tmp_path / "a.npz").stat().st_size
    _same(half, load_features(tmp_path / "c.npz"))
    with pytest.raises(ParameterError, match="dtype"):
        write_features(features, tmp_path / "d.npz", dtype="int8")


def test_float16_refuses_values_beyond_its_range(tmp_path):
    features = _features()
    big = Features(mel=features.mel * 1e6, spans=features.spans, meta=features.meta)
    with pytest.raises(ParameterError, match="float16"):
        write_features(big, tmp_path / "a.npz", dtype="float16")
    assert not list(tmp_path.iterdir())


def test_streamed_rows_with_nan_leave_no_file(tmp_path):
    features = _features()
    mel = features.mel.copy()
    mel[30, 2] = np.nan
    bad = _streamed(Features(mel=mel, spans=features.spans, meta=features.meta))
    with pytest.raises(ParameterError, match="first at frame 30"):
        write_features(bad, tmp_path / "a.npz")
    assert not list(tmp_path.iterdir())


def test_member_keys_split_as_webdataset_splits_them():
    from webdataset.tariterators import base_plus_ext

    from adares.shards import member_key

    for output_id in ("a/b", "a.b/c.d", "x/.hidden", "100%/b.wav", "a/b.wav.c"):
        key = member_key(output_id)
        assert base_plus_ext(f"{key}.mel.npy") == (key, "mel.npy")
    assert len({member_key(i) for i in ("a/b.wav", "a/b%2Ewav", "a/b_wav")}) == 3


def test_shards_read_back_with_webdataset_and_adares(tmp_path):
    import webdataset as wds

    from adares.shards import ShardWriter, member_key
    from adares.store import read_features, write_sample

    writer = ShardWriter(tmp_path / "shards", max_files=2)
    originals = {member_key(f"d/clip{i}.x"): _features(frames=10 + i, seed=i, scores=i % 2 == 0) for i in range(5)}
    for key, features in originals.items():
        write_sample(features if key.endswith("0") else _streamed(features), writer, key=key)
    writer.finish()
    shards = sorted(path for path, _ in writer.finished)
    assert [len(keys) for _, keys in writer.finished] == [2, 2, 1]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(p.name for p in shards)
    seen = {}
    for sample in wds.WebDataset([str(p) for p in shards], shardshuffle=False).decode():
        seen[sample["__key__"]] = sample
    assert sorted(seen) == sorted(originals)
    for path, keys in writer.finished:
        for key in keys:
            features = originals[key]
            sample = seen[key]
            assert np.array_equal(sample["mel.npy"], features.mel) and sample["json"] == features.meta
            assert ("scores.npy" in sample) == (features.scores is not None)
            record = {"shard": str(path.relative_to(tmp_path)), "member": key, "output": "ignored"}
            _same(read_features(tmp_path, record), features)
            _same(load_features(f"{path}#{key}"), features)
    with pytest.raises(FeatureFileError, match="no such sample"):
        load_features(f"{shards[0]}#nothing")


def test_a_failed_sample_leaves_the_shard_whole(tmp_path):
    import tarfile

    from adares.shards import ShardWriter
    from adares.store import write_sample

    writer = ShardWriter(tmp_path)
    write_sample(_features(), writer, key="good")
    mel = _features().mel.copy()
    mel[-1, 0] = np.inf
    with pytest.raises(ParameterError, match="non-finite"):
        write_sample(_streamed(Features(mel=mel, spans=_features().spans, meta={"sr": 16000})), writer, key="bad")
    write_sample(_features(seed=3), writer, key="after")
    writer.finish()
    ((path, keys),) = writer.finished
    assert keys == ["good", "after"]
    with tarfile.open(path) as tar:
        assert sorted({name.split(".")[0] for name in tar.getnames()}) == ["after", "good"]


def test_an_aborted_shard_leaves_nothing(tmp_path):
    from adares.shards import ShardWriter
    from adares.store import write_sample

    writer = ShardWriter(tmp_path)
    write_sample(_features(), writer, key="a")
    writer.abort()
    writer.finish()
    assert writer.finished == [] and not list(tmp_path.iterdir())


def _state(manifest: Manifest) -> tuple:
    return (
        manifest.latest(),
        manifest.latest(config="c1"),
        manifest.latest(config="c2"),
        manifest.done(),
        manifest.failure_report(),
    )


def test_compaction_keeps_what_the_manifest_says_of_every_source(tmp_path):
    path = tmp_path / "manifest.jsonl"
    records = [
        record("a", "failed", error="bad"),
        record("b", "ok"),
        record("a", "failed", config="c2", error="other"),
        record("a", "ok"),
        record("c", "failed", error="worse"),
        record("b", "ok", seconds=2.0),
    ]
    rewrite_jsonl(path, records)
    manifest = Manifest(path)
    before = _state(manifest)
    assert list(manifest.latest()) == ["a", "b", "c"] and manifest.latest()["a"]["status"] == "ok"
    assert manifest.superseded == 2 and not manifest.compact()  # not worth it: 2 superseded of 6
    assert manifest.compact(force=True)
    assert [r["source"] for r in read_jsonl(path)] == ["a", "a", "b", "c"]
    for again in (manifest, Manifest(path)):
        assert (len(again), again.superseded) == (4, 0)
        assert _state(again) == before
    with manifest, pytest.raises(ParameterError, match="open for writing"):
        manifest.compact()


def test_compaction_runs_once_superseded_records_outnumber_the_rest(tmp_path):
    manifest = Manifest.of(tmp_path)
    with manifest:
        for status in ("failed", "failed", "ok"):
            manifest.append(record("a", status, error="x"))
        manifest.append(record("b", "ok"))
    assert (len(manifest), manifest.superseded) == (4, 2) and not manifest.compact()
    with manifest:
        manifest.append(record("b", "ok"))
    assert manifest.compact() and [r["source"] for r in read_jsonl(manifest.path)] == ["a", "b"]


def test_a_write_the_disk_refuses_leaves_no_partial_line(tmp_path, monkeypatch):
    import errno
    import os

    from adares import store
    from adares.errors import OutputError

    manifest = Manifest.of(tmp_path)
    with manifest:
        manifest.append(record("a", "ok"))
    before = manifest.path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 10:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.os, "write", half_then_full)
    with manifest, pytest.raises(OutputError, match=r"manifest.jsonl: No space left on device \(ENOSPC\)"):
        manifest.append(record("b", "ok"))
    monkeypatch.undo()
    assert manifest.path.read_bytes() == before
    assert sorted(Manifest.of(tmp_path).latest()) == ["a"]


def test_failures_report_is_left_alone_when_unchanged(tmp_path):
    manifest = Manifest.of(tmp_path)
    with manifest:
        manifest.append(record("a", "failed", error="bad"))
    manifest.compact_failures()
    stamp = manifest.failures_path.stat().st_mtime_ns
    inode = manifest.failures_path.stat().st_ino
    manifest.compact_failures()
    assert (manifest.failures_path.stat().st_mtime_ns, manifest.failures_path.stat().st_ino) == (stamp, inode)


def test_float16_hdf5_in_memory_and_streamed(tmp_path):
    features = _features(frames=50, mels=16)
    write_features(features, tmp_path / "a.h5", format="hdf5", dtype="float16")
    write_features(_streamed(features), tmp_path / "b.h5", format="hdf5", dtype="float16")
    for name in ("a.h5", "b.h5"):
        half = load_features(tmp_path / name)
        assert half.meta == features.meta | {"dtype": "float16"}
        assert np.array_equal(half.mel, features.mel.astype(np.float16).astype(np.float32))
        assert np.array_equal(half.scores, features.scores) and np.array_equal(half.spans, features.spans)


def test_shards_with_a_sample_no_record_names_are_removed(tmp_path):
    """A run killed after a shard's rename and before all its records were written leaves a shard
    part of whose samples are unrecorded: the rerun redoes them, so the whole shard must go."""
    from adares.shards import SHARDS_DIR, ShardWriter, npy_member, shard_keys
    from adares.store import remove_unrecorded_shards

    writer = ShardWriter(tmp_path / SHARDS_DIR, max_files=2)
    for key in ("a", "b", "dir/c", "d", "b", "e", "f"):  # "b" twice: its source changed and was redone
        writer.add(key, [npy_member("mel.npy", np.zeros((2, 3), np.float32))])
    writer.finish()
    (first, _), (partial, _), (redone, _), (never, _) = writer.finished
    assert shard_keys(partial) == {"dir/c", "d"} and shard_keys(redone) == {"b", "e"}
    corrupt = tmp_path / SHARDS_DIR / "shard-corrupt.tar"
    corrupt.write_bytes(b"not a tar file")
    records = [
        {"source": key, "status": "ok", "shard": f"{SHARDS_DIR}/{path.name}", "member": key}
        for path, key in [(first, "a"), (redone, "b"), (partial, "dir/c"), (redone, "e"), (corrupt, "x")]
    ]
    # Kept: the first shard (its "b" is superseded by the redone copy, not unrecorded) and the
    # redone one. Removed: the one whose "d" was never recorded, the unreadable one, and the one
    # no record names.
    assert remove_unrecorded_shards(tmp_path, records) == 3
    assert first.is_file() and redone.is_file()
    assert not partial.exists() and not corrupt.exists() and not never.exists()
