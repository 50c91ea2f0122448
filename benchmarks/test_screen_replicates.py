"""Pooling two replicates of a screen: the paired differences per replicate and on averaged runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import screen_replicates  # noqa: E402


def _results(path: Path, accuracy: dict[str, float], *, shift: float = 0.0, name: str = "cand") -> Path:
    """A results file of two tasks, 2 seeds x 2 folds, every configuration at a set accuracy (+ shift on run 0,0)."""
    runs = []
    for config, value in accuracy.items():
        for task in ("keywords", "drums"):
            for seed in (0, 1):
                for fold in (0, 1):
                    bump = shift if (seed, fold) == (0, 0) and config.startswith(name) else 0.0
                    noise = 0.01 * (seed + 2 * fold)
                    runs.append(
                        {"task": task, "config": config, "seed": seed, "fold": fold, "accuracy": value + bump + noise}
                    )
    meta = {"json": path.name, "commit": "abc", "date": "today", "seeds": [0, 1], "folds": 2}
    path.write_text(json.dumps({"meta": meta, "runs": runs}))
    return path


BASE = {"none": 0.80, "uniform-0.75": 0.76, "flux-0.75": 0.75}


def test_the_pooled_difference_averages_each_run_over_the_replicates(tmp_path):
    first = _results(tmp_path / "a.json", BASE | {"old-0.75": 0.77}, name="old")
    second = _results(tmp_path / "b.json", BASE | {"cand-0.75": 0.78}, shift=0.04)
    runs_first, _ = screen_replicates.read_runs(first, rename={"old": "cand"})
    runs_second, _ = screen_replicates.read_runs(second, rename={})
    result = screen_replicates.compare(runs_first, runs_second, configs=["cand-0.75"])
    against_flux = result["cand-0.75"]["flux-0.75"]
    assert against_flux["first"]["mean"] == pytest.approx(2.0)
    # replicate 2: +3 pt on every run, +4 more on one run of four
    assert against_flux["second"]["mean"] == pytest.approx(3.0 + 1.0)
    assert against_flux["pooled"]["mean"] == pytest.approx((2.0 + 4.0) / 2)
    assert against_flux["gap"] == pytest.approx(-2.0)
    assert set(result["cand-0.75"]) == {"none", "uniform-0.75", "flux-0.75"}


def test_the_command_names_what_it_compares_and_refuses_bad_pairs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(screen_replicates, "RESULTS", tmp_path)
    first = _results(tmp_path / "a.json", BASE | {"old-0.75": 0.77}, name="old")
    second = _results(tmp_path / "b.json", BASE | {"cand-0.75": 0.78})
    args = [str(first), str(second), "--config", "old=cand", "--name", "t", "--no-markdown"]
    assert screen_replicates.main(args) == 0
    assert "| cand-0.75 | flux-0.75 | +2.00 ± 0.00 | +3.00 ± 0.00 | **no** | +2.50 ± 0.00 |" in capsys.readouterr().out
    assert (tmp_path / "screen-t.json").is_file()
    with pytest.raises(SystemExit):
        screen_replicates.main([str(first), str(second), "--name", "t", "--no-markdown"])
    with pytest.raises(SystemExit):
        screen_replicates.main([str(first), str(second), "--config", "old", "--name", "t", "--no-markdown"])
