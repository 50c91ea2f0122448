"""Tests of the classifier backbone and the training augmentations."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adares.errors import ParameterError
from adares.models import ConvClassifier, mixup, spec_augment
from adares.models.augment import span_masks
from adares.models.cnn import masked_max, masked_mean


def _classifier(**kwargs) -> ConvClassifier:
    torch.manual_seed(0)
    settings = {"n_mels": 16, "n_classes": 5, "widths": (8, 8, 12), "kernel_size": 3}
    settings.update(kwargs)
    return ConvClassifier(**settings).eval()


@pytest.mark.parametrize(("in_channels", "plane_mode"), [(1, "stack"), (3, "stack"), (3, "mix")])
@pytest.mark.parametrize("pool_every", [0, 1, 2])
def test_batch_consistency(in_channels, plane_mode, pool_every):
    model = _classifier(in_channels=in_channels, plane_mode=plane_mode, pool_every=pool_every)
    if plane_mode == "mix":
        with torch.no_grad():
            model.plane_weight.normal_()
            model.plane_bias.normal_()
    lengths = torch.tensor([23, 9, 1, 16])
    batch = torch.randn(4, in_channels, 23, 16)
    # Garbage in the padding must not leak into the valid frames.
    for item, length in enumerate(lengths):
        batch[item, :, length:] = 1e3
    logits = model(batch, lengths)
    assert logits.shape == (4, 5)
    for item, length in enumerate(lengths):
        alone = model(batch[item : item + 1, :, :length])
        torch.testing.assert_close(alone[0], logits[item], rtol=1e-5, atol=1e-5)


def test_three_dim_input_is_one_plane():
    model = _classifier()
    x = torch.randn(2, 11, 16)
    torch.testing.assert_close(model(x), model(x[:, None]))


def test_masked_pooling_reference():
    x = torch.randn(3, 4, 7)
    lengths = [7, 3, 1]
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    for item, length in enumerate(lengths):
        torch.testing.assert_close(masked_mean(x, mask)[item], x[item, :, :length].mean(-1))
        torch.testing.assert_close(masked_max(x, mask)[item], x[item, :, :length].amax(-1))


def test_macs_linear_in_frames_and_planes_paid_for():
    def macs(model, planes, frames):
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, planes, frames, 16))
        return counter.get_total_flops() / 2

    one = _classifier(in_channels=1, pool_every=0)
    three = _classifier(in_channels=3, pool_every=0)
    # First conv: F*C*k*w1 per frame; then w1*k*w2, w2*k*w3; head: 2*w3*K once per clip.
    per_frame = 16 * 3 * 8 + 8 * 3 * 8 + 8 * 3 * 12
    head = 2 * 12 * 5
    assert macs(one, 1, 40) == 40 * per_frame + head
    assert macs(three, 3, 40) == 40 * (per_frame + 2 * 16 * 3 * 8) + head
    assert macs(one, 1, 20) < macs(one, 1, 40)
    # Mixed planes: one per-bin combination (C*F per frame), then the one-plane network.
    mixed = _classifier(in_channels=3, plane_mode="mix", pool_every=0)
    assert macs(mixed, 3, 40) == 40 * (per_frame + 3 * 16) + head


def test_plane_mix_starts_as_the_first_plane():
    mixed = _classifier(in_channels=3, plane_mode="mix")
    single = _classifier(in_channels=1)
    single.load_state_dict({k: v for k, v in mixed.state_dict().items() if not k.startswith("plane_")})
    x = torch.randn(2, 3, 12, 16)
    torch.testing.assert_close(mixed(x), single(x[:, :1]))


def test_classifier_gradients_reach_input():
    model = _classifier(in_channels=3).train()
    x = torch.randn(2, 3, 10, 16, requires_grad=True)
    model(x, torch.tensor([10, 6])).sum().backward()
    assert x.grad is not None
    # Padding gets no gradient: it cannot influence the output.
    assert torch.all(x.grad[1, :, 6:] == 0)
    assert torch.any(x.grad[1, :, :6] != 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_mels": 0},
        {"n_classes": 1.5},
        {"widths": ()},
        {"kernel_size": 4},
        {"dropout": 1.0},
        {"pool_every": -1},
        {"plane_mode": "sum"},
    ],
)
def test_classifier_rejects_bad_arguments(kwargs):
    with pytest.raises(ParameterError):
        _classifier(**kwargs)


def test_classifier_rejects_wrong_feature_shape():
    model = _classifier(in_channels=3)
    with pytest.raises(ParameterError, match="3 plane"):
        model(torch.randn(1, 1, 5, 16))
    with pytest.raises(ParameterError, match="16 mel bins"):
        model(torch.randn(1, 3, 5, 8))


def test_config_round_trip():
    model = _classifier(in_channels=3, pool_every=1)
    rebuilt = ConvClassifier(**model.config())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x = torch.randn(2, 3, 9, 16)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_span_masks_stay_inside_lengths_and_width():
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([50, 10, 1, 0])
    max_width = torch.tensor([5, 5, 5, 5])
    for _ in range(50):
        masked = span_masks(lengths, size=60, count=1, max_width=max_width, generator=generator)
        for item, length in enumerate(lengths.tolist()):
            assert not masked[item, length:].any()
            assert masked[item].sum() <= min(5, length)
            hits = masked[item].nonzero().flatten()
            if len(hits):
                assert hits[-1] - hits[0] + 1 == len(hits)  # one contiguous span


def test_spec_augment_fills_with_clip_minimum_and_is_reproducible():
    log_mel = torch.randn(3, 40, 16)
    lengths = torch.tensor([40, 25, 12])
    log_mel[1, 25:] = -99.0  # padding: not part of the clip's minimum
    out, time_masked = spec_augment(
        log_mel, lengths, generator=torch.Generator().manual_seed(0), time_width=0.3, freq_width=4
    )
    again, again_masked = spec_augment(
        log_mel, lengths, generator=torch.Generator().manual_seed(0), time_width=0.3, freq_width=4
    )
    torch.testing.assert_close(out, again)
    assert torch.equal(time_masked, again_masked)
    for item, length in enumerate(lengths.tolist()):
        floor = log_mel[item, :length].min()
        changed = out[item] != log_mel[item]
        assert torch.all(out[item][changed] == floor)
        # Time-masked frames are blank across every mel bin.
        assert torch.all(out[item, time_masked[item]] == floor)
        assert not time_masked[item, length:].any()
    assert time_masked.any()


def test_spec_augment_without_masks_is_identity():
    log_mel = torch.randn(2, 8, 4)
    out, masked = spec_augment(log_mel, torch.tensor([8, 5]), generator=torch.Generator(), time_masks=0, freq_masks=0)
    torch.testing.assert_close(out, log_mel)
    assert not masked.any()


def test_mixup_mixes_targets_and_zeroes_padding():
    feature = torch.ones(4, 3, 6, 2)
    feature[1, :, 3:] = 7.0  # padding of item 1
    targets = torch.eye(4)
    lengths = torch.tensor([6, 3, 6, 5])
    mixed, mixed_targets, mixed_lengths = mixup(
        feature, targets, lengths, alpha=0.4, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(4))
    assert mixed.max() <= 1.0 + 1e-6  # the 7s in the padding never leak
    assert torch.all(mixed_lengths >= lengths)
    unchanged = mixup(feature, targets, lengths, alpha=0.0, generator=torch.Generator())
    assert unchanged[0] is feature
    with pytest.raises(ParameterError):
        mixup(feature, targets, lengths, alpha=-1.0, generator=torch.Generator())
