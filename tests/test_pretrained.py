"""The shipped ``default`` bundle on the committed demo sentence: its importance must vary within speech.

A learned estimator that has collapsed into a voice-activity detector gives every voiced frame the
same saturated score (one value on 71 % of the voiced frames, for the bundle issue 15 replaced),
so within speech it merges no better than uniform pooling. The merge sees the scores after
:func:`~adares.functional.merge.normalize_scores`, so that is where they are counted, without a
bundle's score cap (``min_span_exponent``): the cap gives the most important frames one value on
purpose (the finest span the merge allows; with the shipped cap, 0.5, that is 24 % of the
sentence's voiced frames at reduction 0.5 and 6 % at 0.75), which says nothing about whether the
estimator tells speech frames apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adares import load
from adares.frontend import MelFrontend
from adares.functional.merge import normalize_scores
from adares.registry import resolve_importance

SENTENCE = Path(__file__).resolve().parents[1] / "demo" / "audio" / "speech" / "sentence.flac"
# Voiced: a frame's mel power within 40 dB of the loudest frame's (the sentence's pauses are silent).
VOICED_DB = 40.0
MOST_COMMON_SHARE = 0.2


def _voiced_scores(model: str, *, reduction: float) -> torch.Tensor:
    """Normalised scores of ``model`` on the sentence's voiced frames, at the 5 ms hop."""
    samples, _ = load(SENTENCE, sr=16000)
    frontend = MelFrontend(hop="5ms")
    power, _ = frontend.power(torch.from_numpy(samples))
    power = power.reshape(-1, power.shape[-1])
    raw = resolve_importance(model).score(samples, power, frontend=frontend)
    frames = raw.shape[0]
    scores = normalize_scores(raw[None].double(), round((1.0 - reduction) * frames), min_span_exponent=0.0)[0]
    energy = power.sum(1)
    voiced = energy > energy.max() * 10.0 ** (-VOICED_DB / 10.0)
    return scores[voiced]


def _most_common_share(scores: torch.Tensor) -> float:
    """Share of ``scores`` equal (to six decimals) to their most common value."""
    _, counts = torch.unique(torch.round(scores, decimals=6), return_counts=True)
    return float(counts.max()) / scores.numel()


def test_the_count_sees_a_plateau() -> None:
    """The measure itself can fail: a plateau over most frames counts as one value."""
    plateau = torch.cat([torch.full((80,), 0.7), torch.linspace(0.1, 0.6, 20, dtype=torch.float32)])
    assert _most_common_share(plateau.double()) == pytest.approx(0.8)
    assert _most_common_share(torch.linspace(0.1, 0.9, 100, dtype=torch.float64)) == pytest.approx(0.01)


@pytest.mark.parametrize("reduction", [0.5, 0.75])
def test_default_varies_within_speech(reduction: float) -> None:
    scores = _voiced_scores("default", reduction=reduction)
    assert scores.numel() > 500  # the sentence is mostly speech
    share = _most_common_share(scores)
    assert share <= MOST_COMMON_SHARE, f"one score value covers {share:.1%} of the voiced frames"


def _make_default():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "adares" / "pretrained" / "make_default.py"
    spec = importlib.util.spec_from_file_location("make_default", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_card_takes_screen_figures_only_for_its_own_weights(tmp_path: Path) -> None:
    import json

    def entry(mean: float) -> dict:
        return {"mean": {"vs": {"none": {"mean": mean, "sem": 0.123456, "runs": 32}}}}

    results = {
        "meta": {"weights": {"runs/cand": "abc"}, "seeds": [0, 1], "folds": 4, "tasks": ["a"], "commit": "c0"},
        "summary": {"cand-0.5": entry(-0.25), "cand-0.75": entry(-1.0)},
    }
    path = tmp_path / "screen.json"
    path.write_text(json.dumps(results))
    make_default = _make_default()
    figures = make_default.screen_figures(path, sha256="abc")
    assert figures["screened_as"] == "runs/cand" and figures["runs"] == 8
    assert figures["reduction 0.5"] == {"none": {"mean": -0.25, "sem": 0.12}}
    assert figures["reduction 0.75"]["none"]["mean"] == -1.0
    assert make_default.screen_figures(path, sha256="other") is None
    assert make_default.screen_figures(tmp_path / "missing.json", sha256="abc") is None
    del results["summary"]["cand-0.75"]
    path.write_text(json.dumps(results))
    assert make_default.screen_figures(path, sha256="abc") is None


def test_the_card_takes_screen_figures_only_for_the_cap_it_merges_with(tmp_path: Path) -> None:
    import json

    entry = {"mean": {"vs": {"none": {"mean": 0.5, "sem": 0.25, "runs": 8}}}}
    results = {
        "meta": {
            "weights": {"runs/plain": "abc", "runs/capped": "abc"},
            "min_span_exponents": {"runs/plain": 0.0, "runs/capped": 0.5},
            "seeds": [0, 1],
            "folds": 4,
        },
        "summary": {f"{name}-{r}": entry for name in ("plain", "capped") for r in ("0.5", "0.75")},
    }
    path = tmp_path / "screen.json"
    path.write_text(json.dumps(results))
    make_default = _make_default()
    assert make_default.screen_figures(path, sha256="abc")["screened_as"] == "runs/plain"
    assert make_default.screen_figures(path, sha256="abc", min_span_exponent=0.5)["screened_as"] == "runs/capped"
    assert make_default.screen_figures(path, sha256="abc", min_span_exponent=0.25) is None


def test_the_card_records_its_cap_where_a_compressor_writes_it() -> None:
    make_default = _make_default()
    card = {"name": "default", "reduction": 0.5, "validated": {}, "min_span_exponent": 0.25}
    assert list(make_default.with_min_span_exponent(card, 0.5).items()) == [
        ("name", "default"),
        ("reduction", 0.5),
        ("min_span_exponent", 0.5),
        ("validated", {}),
    ]
    assert "min_span_exponent" not in make_default.with_min_span_exponent(card, 0.0)


def test_card_only_rewrites_the_card_as_a_full_run_would(tmp_path: Path) -> None:
    import json
    import shutil

    from adares.compressor import Compressor

    shipped = Path(__file__).resolve().parents[1] / "adares" / "pretrained" / "default"
    out = tmp_path / "default"
    shutil.copytree(shipped, out)
    weights = (out / "weights.safetensors").read_bytes()
    sha256 = json.loads((out / "config.json").read_text())["weights"]["sha256"]
    entry = {"mean": {"vs": {"flux-0.75": {"mean": 0.25, "sem": 0.24, "runs": 64}}}}
    screen = tmp_path / "screen.json"
    screen.write_text(
        json.dumps(
            {
                "meta": {
                    "weights": {"default": sha256},
                    "min_span_exponents": {"default": 0.5},
                    "seeds": [0],
                    "folds": 4,
                },
                "summary": {"default-0.5": entry, "default-0.75": entry},
            }
        )
    )
    make_default = _make_default()
    argv = ["--out", str(out), "--card-only", "--screen", str(screen), "--data", str(tmp_path / "no-data")]
    assert make_default.main([*argv, "--min-span-exponent", "0.5"]) == 0
    capped = Compressor.load(out)
    assert capped.min_span_exponent == 0.5 and (out / "weights.safetensors").read_bytes() == weights
    assert "(T'/T)^0.5" in capped.card["description"]
    assert capped.card["metrics"]["screen"]["reduction 0.75"] == {"flux-0.75": {"mean": 0.25, "sem": 0.24}}
    # Without the cap the same screen holds no figures of what the bundle then merges as.
    assert make_default.main([*argv, "--min-span-exponent", "0"]) == 0
    plain = Compressor.load(out)
    assert plain.min_span_exponent == 0.0 and "min_span_exponent" not in plain.card
    assert "screen" not in plain.card["metrics"] and "(T'/T)" not in plain.card["description"]
