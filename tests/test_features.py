import json

import numpy as np
import pytest

from adares import features as features_module
from adares.errors import FeatureFileError, ParameterError
from adares.features import Features, load_features, uniform_spans


def make(frames=5, mels=3, sr=16000, with_scores=True):
    rng = np.random.default_rng(0)
    spans = np.array([[0, 80], [80, 240], [240, 400], [400, 440], [440, 800]])[:frames]
    return Features(
        mel=rng.standard_normal((frames, mels)).astype(np.float32),
        spans=spans,
        scores=rng.random(10).astype(np.float32) if with_scores else None,
        meta={"sr": sr, "hop_samples": 80, "num_samples": 800, "compressor": "test"},
    )


def test_times_are_exact_seconds():
    f = make()
    np.testing.assert_array_equal(f.times(), f.spans / 16000)
    np.testing.assert_allclose(f.frame_durations(), [0.005, 0.01, 0.01, 0.0025, 0.0225])
    assert f.duration == pytest.approx(0.05)


@pytest.fixture(params=["in memory", "streamed"])
def write_mode(request, monkeypatch):
    """Both ways Features.save writes: assembled in memory (small files) or streamed (large)."""
    if request.param == "streamed":
        monkeypatch.setattr(features_module, "_BUFFERED_BYTES", -1)
    return request.param


@pytest.mark.parametrize("with_scores", [True, False])
def test_save_load_roundtrip(tmp_path, with_scores, write_mode):
    f = make(with_scores=with_scores)
    path = tmp_path / "sub" / "x.npz"
    f.save(path)
    g = load_features(path)
    np.testing.assert_array_equal(g.mel, f.mel)
    np.testing.assert_array_equal(g.spans, f.spans)
    assert g.spans.dtype == np.int64 and g.mel.dtype == np.float32
    assert g.meta == f.meta
    if with_scores:
        np.testing.assert_array_equal(g.scores, f.scores)
    else:
        assert g.scores is None
    with np.load(path) as raw:
        assert set(raw.files) == ({"mel", "spans", "meta", "scores"} if with_scores else {"mel", "spans", "meta"})
        assert json.loads(str(raw["meta"]))["sr"] == 16000
    assert list(tmp_path.rglob("*adares-tmp*")) == []


def test_both_write_modes_give_the_same_bytes(tmp_path, monkeypatch):
    make().save(tmp_path / "memory.npz")
    monkeypatch.setattr(features_module, "_BUFFERED_BYTES", -1)
    make().save(tmp_path / "streamed.npz")
    assert (tmp_path / "memory.npz").read_bytes() == (tmp_path / "streamed.npz").read_bytes()


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch, write_mode):
    path = tmp_path / "x.npz"
    make().save(path)
    before = path.read_bytes()
    original = np.savez

    def explode(file, **arrays):
        original(file, **arrays)  # part of the bytes may be out already
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(RuntimeError):
        make(frames=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]


def test_frame_at_and_to_uniform():
    f = make()
    np.testing.assert_array_equal(f.frame_at(np.array([0.0, 0.0049, 0.005, 0.0249, 0.0276, 1.0])), [0, 0, 1, 2, 4, 4])
    grid = f.to_uniform()
    assert grid.shape == (11, 3)
    # grid frame k is centred at sample 80k; it takes the row whose span holds that sample
    expected_rows = [np.searchsorted(f.spans[:, 1], 80 * k, side="right") for k in range(11)]
    np.testing.assert_array_equal(grid, f.mel[np.minimum(expected_rows, 4)])


def test_uniform_spans_tile_the_file():
    spans = uniform_spans(201, hop_samples=80, num_samples=16000)
    assert spans[0, 0] == 0 and spans[-1, 1] == 16000
    np.testing.assert_array_equal(spans[1:, 0], spans[:-1, 1])
    assert np.all(spans[:, 1] > spans[:, 0])
    assert spans[1].tolist() == [40, 120]
    odd = uniform_spans(1 + 1001 // 81, hop_samples=81, num_samples=1001)
    assert odd[-1, 1] == 1001 and np.all(np.diff(odd, axis=1) > 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mel": np.zeros(5)},
        {"spans": np.zeros((4, 2))},
        {"spans": np.array([[0, 80], [70, 240], [240, 400], [400, 440], [440, 800]])},
        {"scores": np.zeros((2, 2))},
        {"meta": {}},
    ],
)
def test_inconsistent_features_are_refused(kwargs):
    base = make()
    args = {"mel": base.mel, "spans": base.spans, "scores": base.scores, "meta": base.meta} | kwargs
    with pytest.raises(ParameterError):
        Features(**args)


def test_load_errors(tmp_path):
    with pytest.raises(FeatureFileError, match="not found"):
        load_features(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(FeatureFileError, match="cannot read"):
        load_features(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(FeatureFileError, match="missing"):
        load_features(other)
    truncated = tmp_path / "cut.npz"
    make().save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(FeatureFileError):
        load_features(truncated)
