from __future__ import annotations

import numpy as np
import pytest
import torch

from adares.errors import ParameterError
from adares.extractor import fine_power, power_blocks, resolve_device
from adares.features import uniform_spans
from adares.frontend import MelFrontend
from adares.registry import resolve_extractor

from .conftest import synth


@pytest.mark.parametrize(
    "settings", [{}, {"preset": "kaldi"}, {"hop": "2.5ms", "n_fft": 1024, "n_mels": 64}, {"hop": 81, "win": 333}]
)
def test_blockwise_power_equals_one_call(settings):
    frontend = MelFrontend(**settings)
    samples = synth(3.7)
    whole, frames = frontend.power(torch.from_numpy(samples))
    blocks = fine_power(frontend, samples, block_frames=97)
    assert blocks.shape == (int(frames[0]), frontend.n_mels)
    torch.testing.assert_close(blocks, whole[0], rtol=0, atol=0)


def test_none_gives_fine_frames_with_uniform_spans():
    frontend = MelFrontend(n_mels=40)
    samples = synth(0.61)
    features = resolve_extractor("none", frontend=frontend)(samples)
    expected, _ = frontend(torch.from_numpy(samples))
    np.testing.assert_allclose(features.mel, expected[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(features.spans, uniform_spans(len(features.mel), hop_samples=80, num_samples=9760))
    assert features.scores is None and features.meta["compressor"] == "none"


@pytest.mark.parametrize("reduction", [0.5, 0.75])
@pytest.mark.parametrize("n_mels", [40, 128])
def test_flux_merges_to_the_requested_length(reduction, n_mels):
    samples = synth(1.3)
    features = resolve_extractor("flux", frontend=MelFrontend(n_mels=n_mels), reduction=reduction)(samples)
    fine = 1 + len(samples) // 80
    assert features.num_frames == max(1, int(np.floor((1 - reduction) * fine + 0.5)))  # half up
    assert features.mel.shape == (features.num_frames, n_mels)
    assert features.scores.shape == (fine,)
    assert features.scores.sum() == pytest.approx(features.num_frames, rel=1e-5)
    assert features.scores.max() <= 1 + 1e-6
    assert features.spans[0, 0] == 0 and features.spans[-1, 1] == len(samples)
    np.testing.assert_array_equal(features.spans[1:, 0], features.spans[:-1, 1])
    assert np.all(features.spans[:, 1] > features.spans[:, 0])
    assert features.meta["compressor"] == "flux" and features.meta["reduction"] == reduction
    # merged frames differ in length: the flux spends resolution where the signal changes
    assert features.frame_durations().max() > 2 * features.frame_durations().min()


def test_flux_without_reduction_is_the_fine_mel():
    frontend = MelFrontend(n_mels=40)
    samples = synth(0.5)
    merged = resolve_extractor("flux", frontend=frontend, reduction=0.0)(samples)
    fine = resolve_extractor("none", frontend=frontend)(samples)
    np.testing.assert_allclose(merged.mel, fine.mel, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(merged.spans, fine.spans)


def test_bad_settings():
    with pytest.raises(ParameterError, match="reduction"):
        resolve_extractor("flux", frontend=MelFrontend(), reduction=1.0)
    with pytest.raises(ParameterError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="CUDA"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_min_span_exponent_bounds_every_merged_frame_in_every_path():
    frontend = MelFrontend()
    extractor = resolve_extractor("flux", frontend=frontend, reduction=0.75, min_span_exponent=0.5)
    uncapped = resolve_extractor("flux", frontend=frontend, reduction=0.75)
    items = [synth(seconds, seed=i) for i, seconds in enumerate([1.0, 0.37, 1.6])]
    for samples, batched in zip(items, extractor.batch(items, metas=[None] * 3), strict=True):
        alone = extractor(samples)
        widths = alone.spans[:, 1] - alone.spans[:, 0]
        # The flux keeps the bursts' onsets at single fine frames; the cap keeps them at 2 hops.
        assert (uncapped(samples).spans[:, 1] - uncapped(samples).spans[:, 0]).min() < 2 * frontend.hop_samples
        # (The last frame ends where the file does, inside its last fine frame.)
        assert widths[:-1].min() >= 2 * frontend.hop_samples - 1
        assert alone.meta["min_span_exponent"] == 0.5 and uncapped(samples).meta["min_span_exponent"] == 0.0
        np.testing.assert_allclose(batched.mel, alone.mel, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(batched.spans, alone.spans)
    _assert_streaming_equals_in_memory(extractor, _recording(1))


def test_min_span_exponent_is_checked_and_refused_without_a_merge():
    with pytest.raises(ParameterError, match="keeps every fine frame"):
        resolve_extractor("none", frontend=MelFrontend(), min_span_exponent=0.5)
    with pytest.raises(ParameterError, match="min_span_exponent must be a number in"):
        resolve_extractor("flux", frontend=MelFrontend(), min_span_exponent=2.0)
    assert resolve_extractor("none", frontend=MelFrontend())(synth(0.2)).meta["min_span_exponent"] is None


@pytest.mark.parametrize("model", ["none", "flux", "default"])
@pytest.mark.parametrize("settings", [{}, {"n_mels": 40, "hop": "10ms"}, {"preset": "kaldi"}])
@pytest.mark.filterwarnings("ignore::adares.errors.ValidationWarning")
def test_a_batch_of_files_equals_each_file_alone(model, settings):
    frontend = MelFrontend(**settings)
    extractor = resolve_extractor(model, frontend=frontend, reduction=0.75)
    shortest = 0.05 if frontend.preset == "kaldi" else 0.005  # Kaldi frames need a whole window
    items = [synth(seconds, seed=i) for i, seconds in enumerate([1.0, 0.31, 1.73, shortest, 1.0])]
    metas = [{"source": f"f{i}.wav"} for i in range(len(items))]
    batched = extractor.batch(items, metas=metas)
    assert len(batched) == len(items)
    for samples, meta, features in zip(items, metas, batched, strict=True):
        alone = extractor(samples, meta=meta)
        assert features.meta == alone.meta
        if model == "default":
            # A learned estimator's convolutions round differently for a batch than for one item:
            # scores agree to ~1e-6, which can move a merge boundary by one sample and a merged
            # value by ~1e-5 of its frames' spread. The fixed importances are exact.
            np.testing.assert_allclose(features.mel, alone.mel, rtol=1e-4, atol=1e-4)
            assert np.abs(features.spans - alone.spans).max() <= 1
        else:
            np.testing.assert_allclose(features.mel, alone.mel, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(features.spans, alone.spans)
        if alone.scores is None:
            assert features.scores is None
        else:
            np.testing.assert_allclose(features.scores, alone.scores, rtol=1e-5, atol=1e-6)
        assert features.spans[0, 0] == 0 and features.spans[-1, 1] == len(samples)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model", ["none", "flux", "default"])
def test_cuda_gives_the_cpu_features(model):
    cpu = resolve_extractor(model, frontend=MelFrontend(), reduction=0.5)
    gpu = resolve_extractor(model, frontend=MelFrontend(), reduction=0.5, device="cuda")
    items = [synth(seconds, seed=i) for i, seconds in enumerate([2.3, 1.0, 0.4])]
    metas = [None] * len(items)
    pairs = [(cpu(items[0]), gpu(items[0]))]
    pairs += list(zip(cpu.batch(items, metas=metas), gpu.batch(items, metas=metas), strict=True))
    for on_cpu, on_gpu in pairs:
        # float32 on another device: scores agree to ~1e-6, which may move a boundary by a sample
        assert on_gpu.mel.shape == on_cpu.mel.shape
        np.testing.assert_allclose(on_gpu.mel, on_cpu.mel, rtol=1e-3, atol=1e-3)
        assert np.abs(on_gpu.spans - on_cpu.spans).max() <= 1
        if model != "none":
            np.testing.assert_allclose(on_gpu.scores, on_cpu.scores, rtol=0, atol=1e-4)


def _chunks(samples: np.ndarray, sizes: list[int]):
    """An AudioChunks factory: ``samples`` in consecutive pieces of the given sizes, cycled."""

    def chunks():
        start, index = 0, 0
        while start < len(samples):
            size = sizes[index % len(sizes)]
            yield samples[start : start + size]
            start, index = start + size, index + 1

    return chunks


@pytest.mark.parametrize("settings", [{}, {"preset": "kaldi"}, {"hop": 81, "win": 333, "n_mels": 40}])
def test_power_blocks_from_chunks_equal_one_call(settings):
    frontend = MelFrontend(**settings)
    samples = synth(3.7)
    whole = fine_power(frontend, samples)
    chunks = _chunks(samples, [1000, 7, 23_456, 512])()
    blocks = list(power_blocks(frontend, chunks, num_samples=len(samples), block_frames=97))
    assert torch.equal(torch.cat(blocks), whole)
    assert {len(block) for block in blocks[:-1]} == {97}


def test_power_blocks_refuse_audio_of_another_length():
    frontend = MelFrontend()
    samples = synth(1.0)
    with pytest.raises(ParameterError, match="ended after 16000 samples; 16001"):
        list(power_blocks(frontend, [samples], num_samples=len(samples) + 1, block_frames=50))
    with pytest.raises(ParameterError, match="1 samples more"):
        list(power_blocks(frontend, [samples, samples[:1]], num_samples=len(samples), block_frames=50))


def _recording(minutes: int) -> np.ndarray:
    """Minutes of signal whose level changes every minute (the estimator standardises with the
    whole file's statistics, the flux normalises by the whole file's peak)."""
    return np.concatenate([synth(60.0, seed=seed) * (0.02 + 0.1 * seed) for seed in range(minutes)])


def _assert_streaming_equals_in_memory(extractor, samples: np.ndarray) -> None:
    expected = extractor(samples, meta={"source": "long.wav"})
    streamed = extractor.stream(
        _chunks(samples, [262_144, 100_003]), num_samples=len(samples), meta={"source": "long.wav"}
    )
    rows = np.concatenate(list(streamed.rows()))
    assert streamed.meta == expected.meta and streamed.num_mels == expected.num_mels
    np.testing.assert_array_equal(streamed.spans, expected.spans)
    if expected.scores is None:
        assert streamed.scores is None
    if extractor.name == "default":  # the standardisation's sums are added block by block
        np.testing.assert_allclose(streamed.scores, expected.scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(rows, expected.mel, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(streamed.scores, expected.scores)
        np.testing.assert_array_equal(rows, expected.mel)


@pytest.mark.parametrize("model", ["none", "flux", "default"])
@pytest.mark.parametrize("settings", [{}, {"n_mels": 40, "preset": "kaldi"}])
@pytest.mark.filterwarnings("ignore::adares.errors.ValidationWarning")
def test_a_streamed_file_equals_the_in_memory_path(model, settings):
    extractor = resolve_extractor(model, frontend=MelFrontend(**settings), reduction=0.75)
    _assert_streaming_equals_in_memory(extractor, _recording(2))  # three blocks of frames


@pytest.mark.slow
def test_a_streamed_ten_minute_file_equals_the_in_memory_path():
    extractor = resolve_extractor("default", frontend=MelFrontend(), reduction=0.5)
    _assert_streaming_equals_in_memory(extractor, _recording(10))


def test_every_feature_file_says_what_made_it():
    features = resolve_extractor("none", frontend=MelFrontend(n_mels=16))(synth(0.2))
    versions = features.meta["versions"]
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__
    assert set(versions) == {"adares", "torch", "numpy", "soundfile", "libsndfile", "soxr"}
    assert all(isinstance(value, str) and value for value in versions.values())
    assert versions["libsndfile"] not in ("", "unknown")
