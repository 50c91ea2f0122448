"""Tests of compressor bundles: save/load, verification, inference, validation warnings."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from adares import compressor as compressor_module
from adares import extractor as extractor_module
from adares.compressor import Compressor, export_bundle
from adares.diffres import DiffRes, ImportanceEstimator
from adares.errors import ModelError, ParameterError, ValidationWarning
from adares.extractor import MergingExtractor, fine_power
from adares.frontend import MelFrontend
from adares.functional.importance import spectral_flux
from adares.functional.merge import compress, output_lengths
from adares.importance import FluxImportance

SR = 16000


def _estimator(n_mels: int = 16, *, standardize: bool = False, flux_base: bool = False) -> ImportanceEstimator:
    torch.manual_seed(0)
    estimator = ImportanceEstimator(
        n_mels, kernel_size=3, channels=[4, 2, 1], standardize=standardize, flux_base=flux_base
    )
    # Non-trivial batch-norm statistics, so a wrong load shows.
    for module in estimator.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
    return estimator.eval()


def _bundle(tmp_path, *, standardize: bool = False, gain: float | None = None, **kwargs) -> Compressor:
    """A small bundle; with ``gain``, a flux-based estimator whose correction has that gain."""
    settings = {
        "frontend": {"sr": SR, "hop": "5ms", "win": "25ms", "n_mels": 16},
        "reduction": 0.5,
        "name": "tiny",
        "description": "a test bundle",
        "training": {"data": "none"},
        "metrics": {"accuracy": 0.5},
        "validated": {"sr": [SR], "hop_samples": [40, 80, 160], "preset": ["librosa"], "reduction": [0.5, 0.75]},
    }
    settings.update(kwargs)
    estimator = _estimator(standardize=standardize, flux_base=gain is not None)
    if gain is not None:
        with torch.no_grad():
            estimator.correction_gain.fill_(gain)
    return export_bundle(estimator, tmp_path / "tiny", **settings)


def _waveform(seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    burst = (np.abs(t - seconds / 2) < 0.05).astype(np.float64)
    return (0.01 * rng.standard_normal(len(t)) + 0.5 * burst * np.sin(2 * np.pi * 900 * t)).astype(np.float32)


def test_round_trip_keeps_weights_card_and_digest(tmp_path):
    saved = _bundle(tmp_path)
    folder = tmp_path / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    card = json.loads((folder / "config.json").read_text())
    assert card["format"] == "adares-compressor" and card["name"] == "tiny"
    assert card["weights"]["sha256"] == saved.sha256
    import hashlib

    assert hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest() == saved.sha256
    assert card["estimator"] == {
        "type": "ImportanceEstimator",
        "n_mels": 16,
        "kernel_size": 3,
        "channels": [4, 2, 1],
        "standardize": False,
        "receptive_field_frames": 13,
    }
    assert card["frontend"]["hop_samples"] == 80 and card["reduction"] == 0.5
    assert card["metrics"] == {"accuracy": 0.5}
    loaded = Compressor.load(folder)
    reference = _estimator()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.estimator.state_dict()[name], tensor), name
    assert loaded.card == card and loaded.name == "tiny" and loaded.sha256 == saved.sha256


def test_export_from_a_diffres_module(tmp_path):
    module = DiffRes(16, reduction=0.75, kernel_size=3, channels=[2, 1])
    bundle = export_bundle(module, tmp_path / "b", frontend={"sr": SR, "hop": "5ms", "n_mels": 16}, reduction=0.75)
    assert bundle.card["estimator"]["channels"] == [2, 1]
    assert bundle.reduction == 0.75


def test_a_bundle_keeps_its_min_span_exponent_and_merges_with_it(tmp_path):
    plain = _bundle(tmp_path)
    assert "min_span_exponent" not in plain.card and plain.min_span_exponent == 0.0
    capped = export_bundle(
        DiffRes(16, reduction=0.75, kernel_size=3, channels=[4, 2, 1], min_span_exponent=0.5),
        tmp_path / "capped",
        frontend={"sr": SR, "hop": "5ms", "win": "25ms", "n_mels": 16},
        reduction=0.75,
    )
    assert capped.card["min_span_exponent"] == 0.5
    loaded = Compressor.load(tmp_path / "capped")
    assert loaded.min_span_exponent == 0.5 and loaded.card == capped.card
    features = loaded(_waveform(1.0), SR)
    # At ρ = 0.75 and κ = 0.5 no merged frame is narrower than two 80-sample hops (to a sample).
    assert int((features.spans[:, 1] - features.spans[:, 0]).min()) >= 2 * 80 - 1
    assert float(features.scores.max()) <= 0.5 + 1e-6 and features.meta["min_span_exponent"] == 0.5


@pytest.mark.parametrize("exponent", [1.5, -1, "half"])
def test_a_card_with_a_bad_min_span_exponent_is_refused(tmp_path, exponent):
    _bundle(tmp_path)
    card = json.loads((tmp_path / "tiny" / "config.json").read_text())
    card["min_span_exponent"] = exponent
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="min_span_exponent must be a number in"):
        Compressor.load(tmp_path / "tiny")


def test_tampered_weights_are_refused(tmp_path):
    _bundle(tmp_path)
    weights = tmp_path / "tiny" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 .* does not match"):
        Compressor.load(tmp_path / "tiny")


def test_truncated_weights_are_refused(tmp_path):
    _bundle(tmp_path)
    weights = tmp_path / "tiny" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="corrupt or were modified"):
        Compressor.load(tmp_path / "tiny")


def _rewrite_weights(folder, data: bytes) -> None:
    """Replace the weights and update the digest, as an attacker who edits both files would."""
    import hashlib

    (folder / "weights.safetensors").write_bytes(data)
    card = json.loads((folder / "config.json").read_text())
    card["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "config.json").write_text(json.dumps(card))


def test_pickled_weights_are_never_unpickled(tmp_path):
    _bundle(tmp_path)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    _rewrite_weights(tmp_path / "tiny", pickle.dumps({"blocks.0.conv1.weight": Boom()}))
    with pytest.raises(ModelError, match="not a readable safetensors"):
        Compressor.load(tmp_path / "tiny")


def test_weights_of_another_architecture_are_refused(tmp_path):
    _bundle(tmp_path)
    from safetensors.torch import save

    other = ImportanceEstimator(16, kernel_size=3, channels=[8, 1])
    _rewrite_weights(tmp_path / "tiny", save(other.state_dict()))
    with pytest.raises(ModelError, match="do not fit"):
        Compressor.load(tmp_path / "tiny")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda folder: (folder / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda folder: (folder / "config.json").unlink(), "config.json is missing"),
        (lambda folder: (folder / "weights.safetensors").unlink(), "missing"),
        (lambda folder: (folder / "config.json").write_text('{"format": "other"}'), "not an adares compressor"),
    ],
)
def test_broken_bundles_are_refused(tmp_path, edit, message):
    _bundle(tmp_path)
    edit(tmp_path / "tiny")
    with pytest.raises(ModelError, match=message):
        Compressor.load(tmp_path / "tiny")


def test_missing_folder_and_unknown_pretrained_name(tmp_path):
    with pytest.raises(ModelError, match="no such compressor"):
        Compressor.load(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="no pretrained compressor named 'nope'"):
        Compressor.from_pretrained("nope")
    assert not Compressor.is_pretrained_name("nope")
    assert not Compressor.is_pretrained_name("a/default")


def test_features_of_a_waveform(tmp_path):
    bundle = _bundle(tmp_path)
    samples = _waveform()
    features = bundle(samples, SR)
    frames = 1 + len(samples) // 80
    out_frames = int(output_lengths(torch.tensor([frames]), reduction=0.5)[0])
    assert features.mel.shape == (out_frames, 16)
    assert features.scores.shape == (frames,)
    assert features.scores.sum() == pytest.approx(out_frames, rel=1e-5)
    assert features.spans[0, 0] == 0 and features.spans[-1, 1] == len(samples)
    assert np.all(features.spans[1:, 0] == features.spans[:-1, 1])
    assert np.all(features.spans[:, 1] > features.spans[:, 0])
    assert features.meta["compressor"] == "tiny"
    assert features.meta["compressor_sha256"] == bundle.sha256
    assert features.meta["reduction"] == 0.5
    assert features.meta["num_samples"] == len(samples)
    # Another reduction on the same bundle.
    assert bundle(samples, SR, reduction=0.75).mel.shape[0] == int(output_lengths(frames, reduction=0.75))


def test_merge_applies_to_any_user_front_end(tmp_path):
    bundle = _bundle(tmp_path)
    samples = _waveform()
    user = MelFrontend(sr=SR, hop="5ms", n_mels=40, log="db")
    features = bundle(samples, SR, frontend=user)
    # Reference: the estimator on its own 16-mel analysis, merging the user's 40-mel power.
    analysis = MelFrontend(sr=SR, hop="5ms", win="25ms", n_mels=16)
    with torch.no_grad():
        raw = bundle.estimator(analysis(torch.from_numpy(samples))[0])
        power, frames = user.power(torch.from_numpy(samples))
        merged = compress(power, raw, out_frames=output_lengths(frames, reduction=0.5))
    np.testing.assert_allclose(features.mel, user.log_mel(merged.power[0]).numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(features.scores, merged.scores[0].numpy(), rtol=1e-5, atol=1e-6)
    assert features.meta["n_mels"] == 40


def test_a_batch_scored_by_a_bundle_matches_single_calls(tmp_path):
    bundle = _bundle(tmp_path)
    user = MelFrontend(sr=SR, hop="5ms", n_mels=24)
    clips = [_waveform(0.6, seed=1), _waveform(0.35, seed=2)]
    merged = MergingExtractor(user, bundle, reduction=0.75).batch(clips, metas=[None, None])
    for clip, features in zip(clips, merged, strict=True):
        alone = bundle(clip, SR, frontend=user, reduction=0.75)
        assert features.num_frames == alone.num_frames
        np.testing.assert_allclose(features.mel, alone.mel, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(features.scores, alone.scores, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("standardize", "gain"), [(False, None), (True, None), (True, 0.7), (False, -1.3)])
def test_blockwise_scoring_equals_one_call(tmp_path, monkeypatch, standardize, gain):
    bundle = _bundle(tmp_path, standardize=standardize, gain=gain)
    log_mel = torch.randn(1, 300, 16) * 3.0 - 4.0
    log_mel[:, 150:] += 10.0  # blocks whose own statistics differ from the whole's
    whole = bundle.estimate(log_mel)
    monkeypatch.setattr(compressor_module, "BLOCK_FRAMES", 37)
    torch.testing.assert_close(bundle.estimate(log_mel), whole, rtol=1e-5, atol=1e-6)


def test_standardising_bundle_round_trip_and_older_cards(tmp_path):
    saved = _bundle(tmp_path, standardize=True)
    folder = tmp_path / "tiny"
    card = json.loads((folder / "config.json").read_text())
    assert card["estimator"]["standardize"] is True
    loaded = Compressor.load(folder)
    assert loaded.estimator.standardize and loaded.sha256 == saved.sha256
    samples = _waveform()
    np.testing.assert_array_equal(loaded(samples, SR).scores, saved(samples, SR).scores)
    # a card written before the option existed describes an estimator fed the raw log-mel
    del card["estimator"]["standardize"]
    (folder / "config.json").write_text(json.dumps(card))
    assert not Compressor.load(folder).estimator.standardize
    card["estimator"]["standardize"] = "yes"
    (folder / "config.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="standardize must be true or false"):
        Compressor.load(folder)


def test_settings_outside_validation_warn_once_naming_the_setting(tmp_path):
    bundle = _bundle(tmp_path)
    samples = _waveform(0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bundle(samples, SR, frontend=MelFrontend(sr=SR, hop="2.5ms", n_mels=16))  # validated: no warning
    with pytest.warns(ValidationWarning, match=r"hop 20 ms \(320 samples\)"):
        bundle(samples, SR, frontend=MelFrontend(sr=SR, hop="20ms", n_mels=16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bundle(samples, SR, frontend=MelFrontend(sr=SR, hop="20ms", n_mels=16))  # said once
    with pytest.warns(ValidationWarning, match="reduction 0.9"):
        bundle(samples, SR, reduction=0.9)
    with pytest.warns(ValidationWarning, match="sampling rate 8000 Hz"):
        bundle(samples[::2].copy(), 8000)


def test_kaldi_frames_get_the_nearest_centred_score(tmp_path):
    bundle = _bundle(tmp_path)
    samples = _waveform(0.5)
    kaldi = MelFrontend(sr=SR, hop="5ms", win="25ms", n_mels=16, preset="kaldi")
    with pytest.warns(ValidationWarning, match="preset 'kaldi'"):
        features = bundle(samples, SR, frontend=kaldi)
    assert features.scores.shape == (kaldi.num_frames(len(samples)),)
    assert features.spans[-1, 1] == len(samples)


def test_bad_call_arguments(tmp_path):
    bundle = _bundle(tmp_path)
    with pytest.raises(ParameterError, match="mono"):
        bundle(np.zeros((2, 800), dtype=np.float32), SR)
    with pytest.raises(ParameterError, match="runs at 16000 Hz"):
        bundle(np.zeros(800, dtype=np.float32), 8000, frontend=MelFrontend(sr=SR, n_mels=16))


def test_models_command_shows_a_bundle_card(tmp_path):
    from click.testing import CliRunner

    from adares.cli.main import main

    bundle = _bundle(tmp_path)
    result = CliRunner().invoke(main, ["models", str(tmp_path / "tiny")])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and bundle.sha256[:16] in result.output
    assert "hops 2.5 ms, 5 ms, 10 ms" in result.output
    result = CliRunner().invoke(main, ["models", str(tmp_path / "tiny"), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["weights"]["sha256"] == bundle.sha256
    (tmp_path / "tiny" / "weights.safetensors").write_bytes(b"tampered")
    result = CliRunner().invoke(main, ["models", str(tmp_path / "tiny")])
    assert result.exit_code == 2 and "sha256" in result.output


TEST_DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.mark.parametrize("hop", ["2.5ms", "5ms", "10ms"])
def test_shipped_default_extracts_a_committed_clip(hop):
    import hashlib
    import importlib.resources

    from adares.audio import load

    assert Compressor.is_pretrained_name("default") and "default" in Compressor.available()
    bundle = Compressor.from_pretrained("default")
    shipped = importlib.resources.files("adares").joinpath("pretrained", "default")
    digest = hashlib.sha256(shipped.joinpath("weights.safetensors").read_bytes()).hexdigest()
    assert bundle.sha256 == digest == bundle.card["weights"]["sha256"]
    assert bundle.card["validated"]["hop_samples"] == [40, 80, 160]

    samples, sr = load(TEST_DATA / "keyword_yes_16k.flac", sr=SR)  # "yes" at 0.25-0.65 s
    frontend = MelFrontend(sr=SR, hop=hop)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationWarning)  # a validated hop: no warning
        features = bundle(samples, sr, reduction=0.75, frontend=frontend)
    frames = 1 + len(samples) // frontend.hop_samples
    out_frames = int(output_lengths(frames, reduction=0.75))
    assert features.mel.shape == (out_frames, 128) and np.isfinite(features.mel).all()
    assert features.scores.shape == (frames,)
    assert features.spans.shape == (out_frames, 2)
    assert features.spans[0, 0] == 0 and features.spans[-1, 1] == len(samples)
    assert np.all(features.spans[1:, 0] == features.spans[:-1, 1])
    assert np.all(features.spans[:, 1] > features.spans[:, 0])
    assert features.meta["compressor"] == "default"
    assert features.meta["compressor_sha256"] == digest
    assert features.meta["reduction"] == 0.75
    # The trained estimator spends its frames on the word: merged frames are shorter there.
    times = np.arange(frames) * frontend.hop_samples / SR
    word = (times >= 0.25) & (times < 0.65)
    assert features.scores[word].mean() > 2 * features.scores[~word].mean()


def test_tampered_shipped_bundle_is_refused(tmp_path):
    import importlib.resources
    import shutil

    shipped = importlib.resources.files("adares").joinpath("pretrained", "default")
    copy = tmp_path / "default"
    copy.mkdir()
    for name in ("config.json", "weights.safetensors"):
        shutil.copyfile(shipped.joinpath(name), copy / name)
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x10
    (copy / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="refusing to load"):
        Compressor.load(copy)


def test_models_command_lists_the_shipped_default():
    from click.testing import CliRunner

    from adares.cli.main import main

    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("default")
    assert "drums, keywords, pitch" in result.output and "2.5 ms, 5 ms, 10 ms" in result.output
    assert "test_accuracy (%, per hop at reductions 0.5, 0.75):" in result.output


def test_the_users_power_is_reused_when_the_analysis_would_compute_the_same(tmp_path, monkeypatch):
    from adares.extractor import batch_power, fine_power

    bundle = _bundle(tmp_path)
    same = MelFrontend.from_config({**bundle.frontend_config, "log": "db"})  # only the log differs
    other = MelFrontend(sr=SR, hop="5ms", n_mels=24)
    clips = [_waveform(0.6, seed=1), _waveform(0.35, seed=2)]
    expected_one = bundle.raw_scores(clips[0], frontend=same)
    power, frames, waveform, lengths = batch_power(same, clips)
    expected_batch, _ = bundle.batch_scores(waveform, lengths, frontend=same)
    analysis = bundle.analysis_frontend(sr=SR, hop_samples=same.hop_samples)

    def no_second_stft(*args, **kwargs):
        raise AssertionError("the analysis recomputed a power spectrogram it was given")

    with monkeypatch.context() as patch:
        patch.setattr(compressor_module, "fine_power", no_second_stft)
        patch.setattr(analysis, "forward", no_second_stft)
        one = bundle.raw_scores(clips[0], frontend=same, power=fine_power(same, clips[0]))
        batch, counted = bundle.batch_scores(waveform, lengths, frontend=same, power=(power, frames))
    assert torch.equal(one, expected_one)
    assert torch.equal(batch, expected_batch) and torch.equal(counted, frames)
    # another front end's power is not the analysis's: it computes its own
    power, frames, waveform, lengths = batch_power(other, clips)
    batch, _ = bundle.batch_scores(waveform, lengths, frontend=other, power=(power, frames))
    assert torch.equal(batch[:, : expected_batch.shape[1]], expected_batch)


def test_estimating_a_non_finite_log_mel_is_refused(tmp_path):
    bundle = _bundle(tmp_path)
    log_mel = torch.zeros(1, 20, 16)
    log_mel[0, 3, 2] = float("nan")
    with pytest.raises(ParameterError, match="NaN or infinite"):
        bundle.estimate(log_mel)


def test_a_flux_based_bundle_starts_at_the_flux(tmp_path):
    bundle = _bundle(tmp_path, gain=0.0)
    assert json.loads((tmp_path / "tiny" / "config.json").read_text())["estimator"]["flux_base"] is True
    assert Compressor.load(tmp_path / "tiny").estimator.flux_base
    frontend = MelFrontend(sr=SR, hop="5ms", n_mels=16)
    samples = _waveform(1.3)
    flux = MergingExtractor(frontend, FluxImportance(), reduction=0.75)(samples)
    learned = MergingExtractor(frontend, bundle, reduction=0.75)(samples)
    np.testing.assert_array_equal(learned.scores, flux.scores)
    np.testing.assert_array_equal(learned.spans, flux.spans)


def test_cards_of_other_estimators_do_not_mention_the_flux_base(tmp_path):
    _bundle(tmp_path)
    assert "flux_base" not in json.loads((tmp_path / "tiny" / "config.json").read_text())["estimator"]
    card = tmp_path / "tiny" / "config.json"
    card.write_text(card.read_text().replace('"standardize": false', '"standardize": false, "flux_base": "yes"'))
    with pytest.raises(ModelError, match="flux_base must be true or false"):
        Compressor.load(tmp_path / "tiny")


def test_a_bundle_keeps_its_learned_sharpness(tmp_path):
    torch.manual_seed(0)
    estimator = ImportanceEstimator(16, kernel_size=3, channels=[4, 2, 1], flux_base=True, learn_sharpness=True)
    with torch.no_grad():
        estimator.correction_gain.fill_(0.3)
        estimator.log_sharpness.fill_(-0.7)
    bundle = export_bundle(
        estimator.eval(),
        tmp_path / "sharp",
        frontend={"sr": SR, "hop": "5ms", "win": "25ms", "n_mels": 16},
        reduction=0.5,
        name="sharp",
        description="a test bundle",
        training={"data": "none"},
        metrics={},
        validated={"sr": [SR], "hop_samples": [80], "preset": ["librosa"], "reduction": [0.5]},
    )
    assert json.loads((tmp_path / "sharp" / "config.json").read_text())["estimator"]["learn_sharpness"] is True
    loaded = Compressor.load(tmp_path / "sharp")
    assert loaded.estimator.learn_sharpness and float(loaded.estimator.log_sharpness.detach()) == pytest.approx(-0.7)
    frontend = MelFrontend(sr=SR, hop="5ms", n_mels=16)
    samples = _waveform(1.1)
    power = fine_power(frontend, samples)
    torch.testing.assert_close(
        loaded.score(samples, power, frontend=frontend), bundle.score(samples, power, frontend=frontend)
    )
    # a card that asks for it without the flux base is refused with the reason
    card = tmp_path / "sharp" / "config.json"
    card.write_text(card.read_text().replace('"flux_base": true', '"flux_base": false'))
    with pytest.raises(ModelError, match="learn_sharpness needs flux_base"):
        Compressor.load(tmp_path / "sharp")


def test_a_bundle_keeps_its_fixed_flux_power(tmp_path):
    estimator = ImportanceEstimator(16, kernel_size=3, channels=[4, 2, 1], flux_base=True, flux_power=0.5)
    export_bundle(
        estimator.eval(),
        tmp_path / "flat",
        frontend={"sr": SR, "hop": "5ms", "win": "25ms", "n_mels": 16},
        reduction=0.5,
        training={"data": "none"},
    )
    card = json.loads((tmp_path / "flat" / "config.json").read_text())["estimator"]
    assert card["flux_power"] == 0.5 and "learn_sharpness" not in card
    frontend = MelFrontend(sr=SR, hop="5ms", n_mels=16)
    samples = _waveform(1.1)
    flux = MergingExtractor(frontend, FluxImportance(), reduction=0.75)(samples)
    flat = MergingExtractor(frontend, Compressor.load(tmp_path / "flat"), reduction=0.75)(samples)
    # the same order of frames as the flux, flatter: the merge spans differ
    assert not np.array_equal(flat.spans, flux.spans)
    log_mel = torch.randn(2, 30, 16) - 5.0
    with torch.no_grad():
        scored = Compressor.load(tmp_path / "flat").estimator(log_mel)
    torch.testing.assert_close(scored, spectral_flux(log_mel).sqrt())


@pytest.mark.parametrize("standardize", [False, True])
def test_a_flux_based_bundle_scores_a_long_file_in_blocks_as_in_memory(tmp_path, monkeypatch, standardize):
    bundle = _bundle(tmp_path, standardize=standardize, gain=0.8)
    frontend = MelFrontend(sr=SR, hop="5ms", n_mels=16)
    samples = np.concatenate([_waveform(1.0, seed=seed) * (0.1 + seed) for seed in range(3)])
    power = fine_power(frontend, samples)
    expected = bundle.score(samples, power, frontend=frontend)
    monkeypatch.setattr(extractor_module, "BLOCK_FRAMES", 97)
    monkeypatch.setattr(compressor_module, "BLOCK_FRAMES", 97)
    streamed = bundle.score_long(
        audio=lambda: iter([samples[:5000], samples[5000:]]),
        power=lambda: extractor_module.power_blocks(frontend, [samples], num_samples=len(samples), block_frames=97),
        num_samples=len(samples),
        frontend=frontend,
    )
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-7)
