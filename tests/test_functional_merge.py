"""Tests of adares.functional.merge against slow, obviously correct float64 references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adares.errors import ParameterError
from adares.features import uniform_spans
from adares.functional import merge
from adares.functional.merge import (
    compress,
    diffres_planes,
    merge_average,
    merge_log,
    merge_max,
    normalize_scores,
    output_lengths,
    overlap_weights,
    positional_table,
    resolution_encoding,
    spans,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tensors here are tiny: on a shared machine, intra-op threads only add wake-up latency."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# references: one item at a time, float64, loops and dense matrices


def ref_normalize(raw: np.ndarray, target: int, cap: float = 1.0) -> np.ndarray:
    """Bisection on λ for Σ min(cap, λ·raw) = target."""
    target = min(target, len(raw))
    low, high = 0.0, cap / raw.min()
    for _ in range(200):
        lam = 0.5 * (low + high)
        if np.minimum(cap, lam * raw).sum() < target:
            low = lam
        else:
            high = lam
    return np.minimum(cap, high * raw)


def ref_weights(s: np.ndarray, out: int) -> np.ndarray:
    """W[i, j] = |[c_{i-1}, c_i] ∩ [j, j+1]| as a dense [T, T'] matrix."""
    end = np.cumsum(s)
    start = end - s
    start[1:] = end[:-1]
    j = np.arange(out)
    return np.maximum(0.0, np.minimum(end[:, None], j + 1.0) - np.maximum(start[:, None], j))


def ref_table(frames: int, dim: int) -> np.ndarray:
    table = np.zeros((frames, dim))
    for i in range(frames):
        for k in range(dim):
            freq = 10000.0 ** (-(k - k % 2) / dim)
            table[i, k] = math.sin(i * freq) if k % 2 == 0 else math.cos(i * freq)
    return table


def ref_spans(s: np.ndarray, out: int, hop: int, n: int, offset: int = 0) -> np.ndarray:
    end = np.cumsum(s)
    bounds = [0.0]
    for j in range(1, out):
        for i in range(len(s)):
            prev = end[i - 1] if i else 0.0
            if prev <= j < end[i]:
                bounds.append(i + (j - prev) / s[i])
                break
    samples = [int(np.clip(math.floor((b - 0.5) * hop + 0.5) + offset, 0, n)) for b in bounds]
    samples[0] = 0
    samples.append(n)
    return np.array([samples[:-1], samples[1:]]).T


def ref_merges(x: np.ndarray, s: np.ndarray, out: int) -> dict[str, np.ndarray]:
    w = ref_weights(s, out)
    average = w.T @ x
    candidates = np.where(w[:, :, None] > 0, w[:, :, None] * x[:, None, :], -np.inf)
    maximum = len(s) / out * candidates.max(axis=0)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    log_average = np.logaddexp.reduce(log_w[:, :, None] + x[:, None, :], axis=0)
    log_maximum = math.log(len(s) / out) + (log_w[:, :, None] + x[:, None, :]).max(axis=0)
    return {"average": average, "maximum": maximum, "log_average": log_average, "log_maximum": log_maximum}


# --------------------------------------------------------------------------------------------
# strategies


@st.composite
def batches(draw, max_batch: int = 3, max_frames: int = 40, max_features: int = 4):
    """A padded batch: lengths, out_frames, raw scores (bounded away from 0) and features."""
    batch = draw(st.integers(1, max_batch))
    lengths = [draw(st.integers(1, max_frames)) for _ in range(batch)]
    outs = [draw(st.integers(1, n)) for n in lengths]
    frames = max(lengths) + draw(st.integers(0, 3))
    features = draw(st.integers(1, max_features))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    raw = 0.02 + 0.98 * torch.rand(batch, frames, generator=gen, dtype=torch.float64)
    x = torch.rand(batch, frames, features, generator=gen, dtype=torch.float64) * 3.0
    return torch.tensor(lengths), torch.tensor(outs), raw, x


def _item_scores(raw: torch.Tensor, outs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return normalize_scores(raw, outs, lengths)


# --------------------------------------------------------------------------------------------
# output_lengths


def test_output_lengths_round_half_up_and_at_least_one():
    lengths = torch.tensor([5, 3, 1, 2, 1000, 7])
    assert output_lengths(lengths, reduction=0.5).tolist() == [3, 2, 1, 1, 500, 4]
    # 0.7 * 5 is 3.4999999999999996 in floats; the decimal 0.3 is taken exactly, so 3.5 -> 4.
    assert output_lengths(torch.tensor([5]), reduction=0.3).tolist() == [4]
    assert output_lengths(torch.tensor([5]), reduction=0.5).tolist() != [round(2.5)]
    assert output_lengths(torch.tensor([9, 1]), reduction=0.0).tolist() == [9, 1]
    assert output_lengths(torch.tensor([10]), reduction=0.99).tolist() == [1]
    assert output_lengths(torch.tensor([12000]), reduction=0.75).tolist() == [3000]
    assert output_lengths(6, reduction=1 / 3).item() == 4


@pytest.mark.parametrize("reduction", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_output_lengths_rejects_bad_reduction(reduction):
    with pytest.raises(ParameterError):
        output_lengths(torch.tensor([10]), reduction=reduction)


# --------------------------------------------------------------------------------------------
# normalize_scores


@settings(max_examples=80, deadline=None)
@given(batches())
def test_normalize_scores_properties(data):
    lengths, outs, raw, _ = data
    scores = normalize_scores(raw, outs, lengths)
    for b in range(len(lengths)):
        n, target = int(lengths[b]), int(outs[b])
        item = scores[b, :n]
        assert torch.all(scores[b, n:] == 0)
        assert abs(float(item.sum()) - target) <= 1e-9 * target
        assert float(item.max()) <= 1.0 and float(item.min()) > 0.0
        # order preserved: a larger raw score never gets a smaller normalised score
        order = torch.argsort(raw[b, :n])
        assert torch.all(torch.diff(item[order]) >= -1e-12)
        np.testing.assert_allclose(item.numpy(), ref_normalize(raw[b, :n].numpy(), target), rtol=1e-9, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(batches(), st.floats(0.0, 1.0))
def test_normalize_scores_min_span_exponent_caps_every_score(data, exponent):
    lengths, outs, raw, _ = data
    scores = normalize_scores(raw, outs, lengths, min_span_exponent=exponent)
    for b in range(len(lengths)):
        n, target = int(lengths[b]), int(outs[b])
        cap = (target / n) ** exponent
        item = scores[b, :n]
        assert torch.all(scores[b, n:] == 0)
        assert abs(float(item.sum()) - target) <= 1e-9 * target
        assert float(item.max()) <= cap * (1 + 1e-12) and float(item.min()) > 0.0
        order = torch.argsort(raw[b, :n])
        assert torch.all(torch.diff(item[order]) >= -1e-12)
        np.testing.assert_allclose(item.numpy(), ref_normalize(raw[b, :n].numpy(), target, cap), rtol=1e-9, atol=1e-12)


def test_min_span_exponent_zero_is_the_uncapped_normalisation_and_one_is_uniform():
    gen = torch.Generator().manual_seed(5)
    raw = torch.rand(3, 50, generator=gen) ** 3
    lengths, outs = torch.tensor([50, 33, 7]), torch.tensor([12, 30, 2])
    assert torch.equal(
        normalize_scores(raw, outs, lengths, min_span_exponent=0.0), normalize_scores(raw, outs, lengths)
    )
    uniform = normalize_scores(raw, outs, lengths, min_span_exponent=1.0)
    for b in range(3):
        n = int(lengths[b])
        np.testing.assert_allclose(uniform[b, :n].numpy(), np.full(n, int(outs[b]) / n), rtol=1e-6)


def test_min_span_exponent_keeps_every_output_frame_at_least_that_wide():
    # One sharp peak: uncapped it keeps a fine frame to itself; at κ = 0.5 and ρ = 0.75 the finest
    # output frame spans sqrt(4) = 2 fine frames.
    raw = torch.full((1, 40), 0.01, dtype=torch.float64)
    raw[0, 20] = 1.0
    assert float(normalize_scores(raw, 10).max()) == 1.0
    capped = normalize_scores(raw, 10, min_span_exponent=0.5)
    assert float(capped.max()) == pytest.approx(0.5)
    spans = merge.spans(capped, 10, hop_samples=1, num_samples=40)
    assert int((spans[0, :, 1] - spans[0, :, 0]).min()) >= 2


def test_normalize_scores_gradcheck_with_a_cap():
    gen = torch.Generator().manual_seed(4)
    raw = (0.05 + torch.rand(2, 9, generator=gen, dtype=torch.float64)).requires_grad_()
    raw.data[0, 0] = 5.0  # capped: constant, no gradient through it
    lengths = torch.tensor([9, 6])
    assert torch.autograd.gradcheck(
        lambda r: normalize_scores(r, torch.tensor([4, 3]), lengths, min_span_exponent=0.5), (raw,)
    )


@pytest.mark.parametrize("exponent", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_normalize_scores_rejects_bad_min_span_exponent(exponent):
    with pytest.raises(ParameterError, match="min_span_exponent must be a number in"):
        normalize_scores(torch.rand(1, 5), 2, min_span_exponent=exponent)


def test_normalize_scores_caps_and_refills():
    raw = torch.tensor([[1.0, 0.1, 0.1, 0.1, 0.1, 0.1]], dtype=torch.float64)
    scores = normalize_scores(raw, 3)
    # the peak is capped at 1; the other five share the remaining 2 equally
    np.testing.assert_allclose(scores.numpy(), [[1.0, 0.4, 0.4, 0.4, 0.4, 0.4]], rtol=1e-12)


def test_normalize_scores_exact_in_float32_on_long_input():
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(1, 200_000, generator=gen) ** 4 + 1e-3
    scores = normalize_scores(raw, 50_000)
    assert scores.dtype == torch.float32
    assert abs(float(scores.double().sum()) - 50_000) < 0.05
    assert float(scores.max()) <= 1.0


def test_normalize_scores_out_frames_at_or_above_length_gives_ones():
    raw = torch.rand(2, 6, dtype=torch.float64) + 0.01
    scores = normalize_scores(raw, torch.tensor([6, 9]), torch.tensor([6, 4]))
    np.testing.assert_allclose(scores[0].numpy(), np.ones(6), rtol=1e-12)
    np.testing.assert_allclose(scores[1].numpy(), [1, 1, 1, 1, 0, 0], rtol=1e-12)


def test_normalize_scores_underflowed_item_becomes_uniform():
    raw = torch.zeros(1, 8)
    scores = normalize_scores(raw, 2)
    np.testing.assert_allclose(scores.numpy(), np.full((1, 8), 0.25), rtol=1e-6)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (-0.5, r"must be non-negative, got values in \[-0.5, "),
        # the message says where NaN scores come from and what to do, not only that they are NaN
        (float("nan"), r"must be finite, got values in \[nan, nan\]: the importance estimator's input or weights"),
        (float("inf"), r"must be finite, .*pass audio through adares.load or MelFrontend"),
    ],
)
def test_normalize_scores_rejects_bad_raw(bad, reason):
    raw = torch.rand(1, 5)
    raw[0, 2] = bad
    with pytest.raises(ParameterError, match=reason):
        normalize_scores(raw, 2)


def test_normalize_scores_ignores_garbage_in_padding():
    raw = torch.tensor([[0.5, 0.2, 0.9, float("nan"), -3.0]])
    scores = normalize_scores(raw, 2, torch.tensor([3]))
    assert torch.isfinite(scores).all() and scores[0, 3:].eq(0).all()


def test_normalize_scores_gradcheck():
    gen = torch.Generator().manual_seed(3)
    raw = (0.05 + torch.rand(2, 9, generator=gen, dtype=torch.float64)).requires_grad_()
    raw.data[0, 0] = 5.0  # capped: constant, no gradient through it
    lengths = torch.tensor([9, 6])
    assert torch.autograd.gradcheck(lambda r: normalize_scores(r, torch.tensor([4, 3]), lengths), (raw,))


# --------------------------------------------------------------------------------------------
# merges against the dense reference


@settings(max_examples=80, deadline=None)
@given(batches())
def test_merges_match_dense_reference(data):
    lengths, outs, raw, x = data
    scores = normalize_scores(raw, outs, lengths)
    average = merge_average(x, scores, outs, lengths)
    maximum = merge_max(x, scores, outs, lengths)
    log_average, log_maximum = merge_log(x, scores, outs, lengths)
    rows = int(outs.max())
    assert average.shape == (len(lengths), rows, x.shape[2])
    for b in range(len(lengths)):
        n, out = int(lengths[b]), int(outs[b])
        ref = ref_merges(x[b, :n].numpy(), scores[b, :n].numpy(), out)
        for name, got in (
            ("average", average),
            ("maximum", maximum),
            ("log_average", log_average),
            ("log_maximum", log_maximum),
        ):
            np.testing.assert_allclose(got[b, :out].numpy(), ref[name], rtol=1e-5, atol=1e-12, err_msg=name)
            assert torch.all(got[b, out:] == 0), name


@settings(max_examples=40, deadline=None)
@given(batches(max_features=6))
def test_resolution_encoding_matches_dense_reference(data):
    lengths, outs, raw, x = data
    dim = x.shape[2]
    scores = normalize_scores(raw, outs, lengths)
    encoding = resolution_encoding(scores, outs, dim, lengths)
    table = ref_table(scores.shape[1], dim)
    for b in range(len(lengths)):
        n, out = int(lengths[b]), int(outs[b])
        ref = ref_weights(scores[b, :n].numpy(), out).T @ table[:n]
        np.testing.assert_allclose(encoding[b, :out].numpy(), ref, rtol=1e-5, atol=1e-9)
        assert torch.all(encoding[b, out:] == 0)


def test_overlap_weights_are_the_dense_nonzeros():
    gen = torch.Generator().manual_seed(1)
    scores = normalize_scores(torch.rand(1, 30, generator=gen, dtype=torch.float64) + 0.05, 11)
    rows, weights = overlap_weights(scores, 11)
    dense = np.zeros((30, 11))
    for i in range(30):
        for k in range(2):
            if rows[0, i, k] >= 0:
                dense[i, rows[0, i, k]] += float(weights[0, i, k])
    np.testing.assert_allclose(dense, ref_weights(scores[0].numpy(), 11), atol=1e-12)
    np.testing.assert_allclose(dense.sum(0), np.ones(11), atol=1e-9)  # every output frame full


def test_merge_max_ignores_frames_outside_the_output_frame():
    # Negative inputs: a zero weight must not win the maximum.
    x = -torch.arange(1.0, 7.0, dtype=torch.float64).reshape(1, 6, 1)
    scores = torch.full((1, 6), 0.5, dtype=torch.float64)
    out = merge_max(x, scores, 3)
    np.testing.assert_allclose(out[0, :, 0].numpy(), [2 * 0.5 * -1, 2 * 0.5 * -3, 2 * 0.5 * -5])


def test_blockwise_scatter_equals_one_block(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    lengths = torch.tensor([300, 170])
    outs = output_lengths(lengths, reduction=0.6)
    scores = normalize_scores(torch.rand(2, 300, generator=gen) + 0.01, outs, lengths)
    x = torch.randn(2, 300, 5, generator=gen)
    whole = [
        merge_average(x.exp(), scores, outs, lengths),
        merge_max(x.exp(), scores, outs, lengths),
        *merge_log(x, scores, outs, lengths),
        resolution_encoding(scores, outs, 5, lengths),
        diffres_planes(x, scores, outs, lengths),
    ]
    monkeypatch.setattr(merge, "BLOCK_ELEMENTS", 7 * 2 * 2 * 5)  # 7 frames per block
    blocked = [
        merge_average(x.exp(), scores, outs, lengths),
        merge_max(x.exp(), scores, outs, lengths),
        *merge_log(x, scores, outs, lengths),
        resolution_encoding(scores, outs, 5, lengths),
        diffres_planes(x, scores, outs, lengths),
    ]
    for a, b in zip(whole, blocked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tracked", [False, True])
def test_diffres_planes_match_the_reference_planes(tracked):
    gen = torch.Generator().manual_seed(11)
    lengths = torch.tensor([50, 31, 9])
    outs = output_lengths(lengths, reduction=0.5)
    x = torch.randn(3, 50, 4, generator=gen, dtype=torch.float64) * 3.0
    scores = normalize_scores(torch.rand(3, 50, generator=gen, dtype=torch.float64) + 0.05, outs, lengths)
    scores.requires_grad_(tracked)
    feature = diffres_planes(x, scores, outs, lengths)
    assert feature.shape == (3, 3, 25, 4)
    table = ref_table(50, 4)
    for b, (n, out) in enumerate(zip(lengths.tolist(), outs.tolist(), strict=True)):
        ref = ref_merges(x[b, :n].numpy(), scores[b, :n].detach().numpy(), out)
        eps = math.log(1e-12)
        expected = [np.logaddexp(ref["log_average"], eps), np.logaddexp(ref["log_maximum"], eps)]
        expected.append(ref_weights(scores[b, :n].detach().numpy(), out).T @ table[:n])
        for plane in range(3):
            np.testing.assert_allclose(feature[b, plane, :out].detach().numpy(), expected[plane], rtol=1e-9, atol=1e-12)
        assert torch.all(feature[b, :, out:] == 0)


def test_padding_garbage_never_reaches_the_output():
    gen = torch.Generator().manual_seed(12)
    lengths = torch.tensor([20, 12])
    x = torch.rand(2, 20, 3, generator=gen)
    x[1, 12:] = float("nan")
    scores = normalize_scores(torch.rand(2, 20, generator=gen) + 0.05, 8, lengths)
    outputs = [
        merge_average(x, scores, 8, lengths),
        merge_max(x, scores, 8, lengths),
        *merge_log(x, scores, 8, lengths),
    ]
    outputs.append(diffres_planes(x, scores, 8, lengths))
    for out in outputs:
        assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# numerical range


def test_merge_log_is_safe_for_any_range():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(1, 80, 6, generator=gen, dtype=torch.float64) * 400.0 - 100.0  # e^300 and e^-100
    x[0, 40:50] = -400.0  # far below the loudest frame elsewhere in the clip
    scores = normalize_scores(torch.rand(1, 80, generator=gen, dtype=torch.float64) + 0.05, 30)
    for dtype in (torch.float64, torch.float32):
        # the reference sees the same rounded inputs: a float32 score moves a small overlap a lot
        ref = ref_merges(x[0].to(dtype).double().numpy(), scores[0].to(dtype).double().numpy(), 30)
        average, maximum = merge_log(x.to(dtype), scores.to(dtype), 30)
        assert torch.isfinite(average).all() and torch.isfinite(maximum).all()
        tol = 1e-9 if dtype == torch.float64 else 1e-5
        np.testing.assert_allclose(average[0].double().numpy(), ref["log_average"], rtol=tol, atol=tol)
        np.testing.assert_allclose(maximum[0].double().numpy(), ref["log_maximum"], rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# batch consistency


@settings(max_examples=30, deadline=None)
@given(batches())
def test_padded_batch_equals_items_one_by_one(data):
    lengths, outs, raw, x = data
    scores = normalize_scores(raw, outs, lengths)
    hop, total = 80, lengths * 80 + 17
    batched = {
        "scores": scores,
        "average": merge_average(x, scores, outs, lengths),
        "maximum": merge_max(x, scores, outs, lengths),
        "log": torch.stack(merge_log(x, scores, outs, lengths)),
        "resolution": resolution_encoding(scores, outs, 3, lengths),
        "spans": spans(scores, outs, lengths, hop_samples=hop, num_samples=total),
    }
    for b in range(len(lengths)):
        n, out = int(lengths[b]), int(outs[b])
        xb, rb = x[b : b + 1, :n], raw[b : b + 1, :n]
        sb = normalize_scores(rb, out)
        single = {
            "scores": sb,
            "average": merge_average(xb, sb, out),
            "maximum": merge_max(xb, sb, out),
            "log": torch.stack(merge_log(xb, sb, out)),
            "resolution": resolution_encoding(sb, out, 3),
            "spans": spans(sb, out, hop_samples=hop, num_samples=int(total[b])),
        }
        torch.testing.assert_close(batched["scores"][b : b + 1, :n], single["scores"], rtol=1e-12, atol=1e-12)
        for key in ("average", "maximum", "resolution", "spans"):
            torch.testing.assert_close(batched[key][b : b + 1, :out], single[key], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batched["log"][:, b : b + 1, :out], single["log"], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# gradients


def _unfull_scores(seed: int, lengths: torch.Tensor, outs: torch.Tensor) -> torch.Tensor:
    """Scores in (0, 0.95) whose sum stops 0.3 short of T': the last boundary is not a kink."""
    gen = torch.Generator().manual_seed(seed)
    frames = int(lengths.max())
    scores = torch.zeros(len(lengths), frames, dtype=torch.float64)
    for b, (n, out) in enumerate(zip(lengths.tolist(), outs.tolist(), strict=True)):
        raw = 0.2 + torch.rand(n, generator=gen, dtype=torch.float64)
        scores[b, :n] = raw / raw.sum() * (out - 0.3)
    assert float(scores.max()) < 0.95
    return scores


@pytest.mark.parametrize("fn", ["average", "maximum", "log_average", "log_maximum"])
def test_merges_gradcheck(fn):
    lengths, outs = torch.tensor([13, 8]), torch.tensor([5, 4])
    scores = _unfull_scores(5, lengths, outs).requires_grad_()
    x = torch.rand(2, 13, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.1
    x.requires_grad_()
    functions = {
        "average": lambda x, s: merge_average(x, s, outs, lengths),
        "maximum": lambda x, s: merge_max(x, s, outs, lengths),
        "log_average": lambda x, s: merge_log(x, s, outs, lengths)[0],
        "log_maximum": lambda x, s: merge_log(x, s, outs, lengths)[1],
    }
    assert torch.autograd.gradcheck(functions[fn], (x, scores))


def test_resolution_encoding_gradcheck():
    lengths, outs = torch.tensor([13, 8]), torch.tensor([5, 4])
    scores = _unfull_scores(7, lengths, outs).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: resolution_encoding(s, outs, 4, lengths), (scores,))


def test_pipeline_gradcheck_from_raw_scores():
    lengths = torch.tensor([11, 7])
    outs = output_lengths(lengths, reduction=0.5)
    raw = 0.1 + torch.rand(2, 11, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    raw.requires_grad_()
    x = torch.rand(2, 11, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def pipeline(r):
        # The scores sum to exactly T', so the last boundary sits on a kink of W; a small
        # squeeze keeps finite differences on one side of it.
        s = normalize_scores(r, outs, lengths) * 0.97
        return merge_log(x, s, outs, lengths)[0]

    assert torch.autograd.gradcheck(pipeline, (raw,))


# --------------------------------------------------------------------------------------------
# resolution table


def test_positional_table_matches_formula_and_any_length():
    np.testing.assert_allclose(positional_table(50, 7, dtype=torch.float64).numpy(), ref_table(50, 7), atol=1e-12)
    far = positional_table(3, 6, start=719_998, dtype=torch.float64).numpy()
    i = np.arange(719_998, 720_001)[:, None]
    freq = 10000.0 ** (-np.arange(0, 6, 2) / 6)
    np.testing.assert_allclose(far[:, 0::2], np.sin(i * freq), atol=1e-9)
    np.testing.assert_allclose(far[:, 1::2], np.cos(i * freq), atol=1e-9)


def test_rotated_table_blocks_stay_accurate_far_out():
    rotation = merge._TableRotation(64, 8, dtype=torch.float32, device=torch.device("cpu"))
    for start in (0, 1000, 719_936):
        block = rotation(start, start + 64).double()
        np.testing.assert_allclose(block.numpy(), positional_table(64, 8, start=start, dtype=torch.float64), atol=3e-6)


# --------------------------------------------------------------------------------------------
# spans


@settings(max_examples=80, deadline=None)
@given(batches(), st.integers(2, 160), st.integers(0, 200))
def test_spans_properties_and_reference(data, hop, extra):
    lengths, outs, raw, _ = data
    scores = normalize_scores(raw, outs, lengths)
    # A signal of T frames at hop h has N in [(T - 1)h, Th) samples.
    total = (lengths - 1) * hop + extra % hop
    result = spans(scores, outs, lengths, hop_samples=hop, num_samples=total)
    assert result.dtype == torch.int64 and result.shape == (len(lengths), int(outs.max()), 2)
    for b in range(len(lengths)):
        n, out, size = int(lengths[b]), int(outs[b]), int(total[b])
        item = result[b, :out].numpy()
        assert item[0, 0] == 0 and item[-1, 1] == size
        assert np.all(item[1:, 0] == item[:-1, 1])
        if size >= out:
            assert np.all(item[:, 1] > item[:, 0]), item
        else:
            assert np.all(item[:, 1] >= item[:, 0])
        assert np.all(result[b, out:].numpy() == -1)
        np.testing.assert_array_equal(item, ref_spans(scores[b, :n].numpy(), out, hop, size))


def test_uniform_scores_give_uniform_spans():
    hop, frames = 80, 101
    total = (frames - 1) * hop + 35
    full = spans(torch.ones(1, frames), frames, hop_samples=hop, num_samples=total)[0].numpy()
    np.testing.assert_array_equal(full, uniform_spans(frames, hop_samples=hop, num_samples=total))
    for out in (50, 33, 7):
        s = torch.full((1, frames), out / frames, dtype=torch.float64)
        got = spans(s, out, hop_samples=hop, num_samples=total)[0].numpy()
        expected = np.floor((np.arange(1, out) * frames / out - 0.5) * hop + 0.5)
        assert np.all(np.abs(got[1:, 0] - expected) <= 1)


def test_spans_offset_and_tiny_signals():
    s = torch.full((1, 4), 0.5, dtype=torch.float64)
    shifted = spans(s, 2, hop_samples=10, num_samples=1000, offset_samples=500)[0].tolist()
    # interior boundary at fine coordinate 2: sample 500 + 15
    assert shifted == [[0, 515], [515, 1000]]
    tiny = spans(torch.ones(1, 3), 3, hop_samples=10, num_samples=2)[0].numpy()
    assert tiny[0, 0] == 0 and tiny[-1, 1] == 2 and np.all(np.diff(tiny.ravel()) >= 0)


# --------------------------------------------------------------------------------------------
# compress and validation


def test_compress_decouples_scores_from_the_merged_features():
    gen = torch.Generator().manual_seed(10)
    lengths = torch.tensor([40, 25])
    raw = torch.rand(2, 40, generator=gen) + 0.01
    power = torch.rand(2, 40, 3, generator=gen)  # 3 bins, whatever the estimator saw
    outs = output_lengths(lengths, reduction=0.75)
    result = compress(power, raw, out_frames=outs, lengths=lengths)
    scores = normalize_scores(raw, outs, lengths)
    torch.testing.assert_close(result.scores, scores)
    torch.testing.assert_close(result.power, merge_average(power, scores, outs, lengths))
    assert result.lengths.tolist() == [10, 6]


@pytest.mark.parametrize(
    "call",
    [
        lambda: merge_average(torch.rand(1, 5), torch.rand(1, 5), 2),  # x not 3-D
        lambda: merge_average(torch.rand(1, 5, 2), torch.rand(1, 6), 2),  # T disagrees
        lambda: merge_average(torch.rand(1, 5, 2), torch.full((1, 5), 1.5), 2),  # score above 1
        lambda: merge_average(torch.rand(1, 5, 2), torch.full((1, 5), 0.4), 0),  # no output frame
        lambda: merge_average(torch.rand(1, 5, 2), torch.full((1, 5), 0.4), 2, torch.tensor([6])),
        lambda: merge_average(torch.rand(1, 5, 2), torch.full((1, 5), 0.4), 2, torch.tensor([0])),
        lambda: merge_average(torch.rand(1, 5, 2), torch.full((1, 5), 0.4), 2, torch.tensor([2.0])),
        lambda: normalize_scores(torch.rand(2, 5), torch.tensor([1, 2, 3])),
        lambda: spans(torch.full((1, 5), 0.4), 2, hop_samples=0, num_samples=100),
        lambda: spans(torch.full((1, 5), 0.4), 2, hop_samples=10, num_samples=-1),
        lambda: resolution_encoding(torch.full((1, 5), 0.4), 2, 0),
    ],
)
def test_bad_arguments_raise_parameter_error(call):
    with pytest.raises(ParameterError):
        call()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 400),
    st.floats(0.0, 0.95),
    st.lists(st.integers(1, 97), min_size=1, max_size=12),
    st.integers(0, 2**31 - 1),
)
def test_merging_in_blocks_gives_exactly_the_rows_of_one_merge(frames, reduction, widths, seed):
    generator = torch.Generator().manual_seed(seed)
    power = torch.rand(frames, 5, generator=generator) * 10.0 ** torch.randint(-6, 3, (frames, 1), generator=generator)
    raw = torch.rand(1, frames, generator=generator) + 1e-3
    count = int(merge.output_lengths(torch.tensor([frames]), reduction=reduction))
    scores = merge.normalize_scores(raw, count)[0]
    whole = merge.merge_average(power[None], scores[None], count)[0]
    bounds = [0]
    for width in widths * (frames // sum(widths) + 1):
        bounds.append(min(frames, bounds[-1] + width))
        if bounds[-1] == frames:
            break
    blocks = (power[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    pieces = list(merge.merge_average_blocks(blocks, scores, count))
    assert [first for first, _ in pieces] == list(itertools.accumulate([0] + [len(rows) for _, rows in pieces[:-1]]))
    assert torch.equal(torch.cat([rows for _, rows in pieces]), whole)


def test_merging_in_blocks_refuses_blocks_that_do_not_add_up():
    scores = torch.full((10,), 0.5)
    with pytest.raises(ParameterError, match="add up to the 10 frames"):
        list(merge.merge_average_blocks([torch.ones(4, 3)], scores, 5))
    with pytest.raises(ParameterError, match="add up to the 10 frames"):
        list(merge.merge_average_blocks([torch.ones(8, 3), torch.ones(8, 3)], scores, 5))
