"""The screen: its statistics and fold dealing (pure functions), and its joint mode on a tiny synthetic task."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import screen  # noqa: E402


def _dataset(groups: int, per_group: int, labels: int) -> tuple[list[str], list[str]]:
    """Groups that each hold one label (like drum recordings), round-robin over labels."""
    label_of, group_of = [], []
    for g in range(groups):
        for _ in range(per_group + g % 3):
            label_of.append(f"L{g % labels}")
            group_of.append(f"g{g}")
    return label_of, group_of


def test_group_folds_never_split_a_group_and_use_every_fold() -> None:
    labels, groups = _dataset(groups=40, per_group=5, labels=4)
    folds = screen.group_folds(labels, groups, folds=5, seed=0)
    fold_of_group: dict[str, set[int]] = {}
    for group, fold in zip(groups, folds, strict=True):
        fold_of_group.setdefault(group, set()).add(fold)
    assert all(len(f) == 1 for f in fold_of_group.values())
    assert set(folds) == set(range(5))


def test_group_folds_balance_every_label() -> None:
    labels, groups = _dataset(groups=40, per_group=5, labels=4)
    folds = screen.group_folds(labels, groups, folds=4, seed=3)
    per_label = Counter(zip(labels, folds, strict=True))
    for label in set(labels):
        counts = [per_label[(label, f)] for f in range(4)]
        # 10 groups of 5-7 clips per label over 4 folds: no fold may lack the label or hold twice its share.
        assert min(counts) > 0
        assert max(counts) <= 2 * min(counts)


def test_group_folds_are_reproducible_and_depend_on_the_seed() -> None:
    labels, groups = _dataset(groups=30, per_group=4, labels=3)
    assert screen.group_folds(labels, groups, folds=3, seed=1) == screen.group_folds(labels, groups, folds=3, seed=1)
    assert screen.group_folds(labels, groups, folds=3, seed=1) != screen.group_folds(labels, groups, folds=3, seed=2)


@pytest.mark.parametrize("folds", [1, 11])
def test_group_folds_refuse_too_few_folds_or_groups(folds: int) -> None:
    labels, groups = _dataset(groups=10, per_group=2, labels=2)
    with pytest.raises(ValueError):
        screen.group_folds(labels, groups, folds=folds, seed=0)


def test_mean_and_sem() -> None:
    mean, sem = screen.mean_and_sem([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert sem == pytest.approx(math.sqrt(5 / 3) / 2)
    assert screen.mean_and_sem([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        screen.mean_and_sem([])


def test_paired_differences_pair_by_run_and_refuse_unpaired_runs() -> None:
    a = {(0, 0): 90.0, (0, 1): 80.0}
    b = {(0, 1): 79.0, (0, 0): 91.0}
    assert screen.paired_differences(a, b) == {(0, 0): -1.0, (0, 1): 1.0}
    with pytest.raises(ValueError, match="unpaired"):
        screen.paired_differences(a, {(0, 0): 1.0})


def test_pairing_removes_what_runs_share() -> None:
    # Two configurations that track each other run to run: the paired difference has a far smaller
    # standard error than either accuracy.
    base = {(s, f): 80.0 + 7 * ((s * 5 + f) % 3) for s in range(4) for f in range(5)}
    better = {k: v + 1.0 + 0.1 * (k[1] % 2) for k, v in base.items()}
    diff = screen.summarize(screen.paired_differences(better, base))
    assert diff["mean"] == pytest.approx(1.04)  # 0.1 on two of five folds
    assert diff["sem"] < 0.05 < screen.summarize(base)["sem"]
    assert diff["runs"] == 20


def test_average_over_tasks_is_per_run() -> None:
    per_task = {"a": {(0, 0): 1.0, (1, 0): 3.0}, "b": {(0, 0): 3.0, (1, 0): 5.0}}
    assert screen.average_over_tasks(per_task) == {(0, 0): 2.0, (1, 0): 4.0}
    with pytest.raises(ValueError):
        screen.average_over_tasks({"a": {(0, 0): 1.0}, "b": {(1, 0): 1.0}})


def test_seed_set_agreement() -> None:
    values = {(s, f): (1.0 if s < 2 else 1.2) + 0.5 * (-1) ** f for s in range(4) for f in range(4)}
    agreement = screen.seed_set_agreement(values, [0, 1], [2, 3])
    assert agreement["gap"] == pytest.approx(-0.2)
    assert agreement["gap_sem"] == pytest.approx(math.hypot(agreement["first"]["sem"], agreement["second"]["sem"]))
    assert agreement["agree"]
    shifted = {k: v + (3.0 if k[0] >= 2 else 0.0) for k, v in values.items()}
    assert not screen.seed_set_agreement(shifted, [0, 1], [2, 3])["agree"]
    with pytest.raises(ValueError, match="overlap"):
        screen.seed_set_agreement(values, [0, 1], [1, 2])


def test_halves() -> None:
    assert screen.halves([3, 0, 2, 1]) == ([0, 1], [2, 3])
    assert screen.halves([5, 4, 6]) == ([4], [5, 6])
    with pytest.raises(ValueError):
        screen.halves([1])


def test_noise_figures_take_the_worst_standard_error_and_count_agreements() -> None:
    def stats(sem: float) -> dict[str, float]:
        return {"mean": 0.0, "sem": sem, "runs": 16}

    summary = {
        "x-0.5": {
            "tasks": {"a": {"vs": {"none": stats(0.6)}}, "b": {"vs": {"none": stats(0.9)}}},
            "mean": {"vs": {"none": stats(0.3)}, "seed_sets": {"none": {"agree": True}}},
        },
        "y-0.5": {
            "tasks": {"a": {"vs": {"none": stats(0.2)}}, "b": {"vs": {"none": stats(0.1)}}},
            "mean": {"vs": {"none": stats(0.45)}, "seed_sets": {"none": {"agree": False}}},
        },
    }
    assert screen.noise_figures(summary) == {"mean_sem_max": 0.45, "task_sem_max": 0.9, "agree": 1, "compared": 2}


def test_uniform_pool_is_the_extractors_merge_with_equal_scores() -> None:
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    mel = (torch.rand(3, 10, 4, generator=generator) * 8 - 10).to(torch.float16)
    lengths = torch.tensor([10, 10, 10])
    # Nothing merged away: the fine frames come back.
    same, frames = screen.uniform_pool(mel, lengths, reduction=0.0)
    assert frames.tolist() == [10, 10, 10]
    assert torch.allclose(same.float(), mel.float(), atol=2e-2)
    # Half: pairs of frames averaged in linear power, then logged again.
    half, frames = screen.uniform_pool(mel, lengths, reduction=0.5)
    assert frames.tolist() == [5, 5, 5]
    power = mel.float().exp() - 1e-6
    expected = ((power[:, 0::2] + power[:, 1::2]) / 2 + 1e-6).log()
    assert torch.allclose(half.float(), expected, atol=2e-2)


# --------------------------------------------------------------------------------------------
# the joint mode: a tiny dataset, a tiny classifier, a few steps


def _joint_setup(tmp_path: Path, torch) -> tuple[list[dict], list[dict], dict]:
    """Jobs of a joint configuration and of `none` on 24 synthetic clips (two classes, 16 mel bins)."""
    generator = torch.Generator().manual_seed(0)
    clips, frames, bins = 24, 40, 16
    labels = [i % 2 for i in range(clips)]
    mel = torch.rand(clips, frames, bins, generator=generator) * 4 - 10
    for i, label in enumerate(labels):
        mel[i, 10 + 10 * label : 20 + 10 * label] += 5  # the class is where the loud part is
    mel[::3, 30:] = float(mel.min())  # digital silence: blank frames for the guide loss
    lengths = torch.full((clips,), frames)
    lengths[1::4] = 33
    path = tmp_path / "none.pt"
    torch.save({"mel": mel.to(torch.float16), "lengths": lengths}, path)
    folds = {seed: [i % 2 for i in range(clips)] for seed in (0, 1)}
    classifier = screen.Classifier(widths=(8, 8), epochs=2, batch_size=8)
    common = {
        "task": "toy",
        "features": (path, "finekey"),
        "labels": labels,
        "n_classes": 2,
        "fold_of": folds,
        "folds": 2,
        "classifier": classifier,
    }
    joint = screen.joint_config(0.75, n_mels=bins)
    return (
        screen.run_jobs(name="joint-diffres-0.75", joint=joint, **common),
        screen.run_jobs(name="none", **common),
        joint,
    )


def test_joint_config_is_adares_trains_diffres_with_standardised_input() -> None:
    pytest.importorskip("torch")
    from adares.train import DEFAULT_ESTIMATOR_CHANNELS

    joint = screen.joint_config(0.75, n_mels=128)
    assert joint["compressor"] == "diffres" and joint["reduction"] == 0.75
    assert joint["estimator"] == {"channels": list(DEFAULT_ESTIMATOR_CHANNELS), "standardize": True}
    assert joint["guide_weight"] == 1.0 and joint["compressor_lr"] is None


def test_joint_runs_pair_with_the_baselines_and_have_their_own_cache(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    joint_jobs, none_jobs, joint = _joint_setup(tmp_path, torch)
    assert [(j["seed"], j["fold"]) for j in joint_jobs] == [(j["seed"], j["fold"]) for j in none_jobs]
    assert all(j["features"] == n["features"] for j, n in zip(joint_jobs, none_jobs, strict=True))
    assert {j["out"] for j in joint_jobs}.isdisjoint(n["out"] for n in none_jobs)
    assert all("joint" not in n for n in none_jobs)
    # Keyed by the settings too: another reduction is another cache entry.
    other = screen.run_jobs(
        task="toy",
        name="joint-diffres-0.5",
        features=(Path(none_jobs[0]["features"]), "finekey"),
        labels=joint_jobs[0]["labels"],
        n_classes=2,
        fold_of={0: joint_jobs[0]["folds"]},
        folds=2,
        classifier=screen.Classifier(**joint_jobs[0]["classifier"]),
        joint={**joint, "reduction": 0.5},
    )
    assert other[0]["out"] != joint_jobs[0]["out"]
    assert screen.compressor_fingerprint(joint) == screen.compressor_fingerprint(dict(joint))


def test_a_joint_run_trains_the_estimator_and_is_deterministic(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        job = _joint_setup(tmp_path, torch)[0][0]
        result, classifier, compressor = screen.train_and_test(job)
        again, classifier_again, compressor_again = screen.train_and_test(job)
    finally:
        torch.set_num_threads(threads)
    initial = screen.joint_compressor(screen._joint_train_config(job["joint"]), seed=screen._seed("toy", 0, 0))
    first_conv = "estimator.blocks.0.conv1.weight"
    assert not torch.equal(compressor.state_dict()[first_conv], initial.state_dict()[first_conv])
    for trained, repeated in ((compressor, compressor_again), (classifier, classifier_again)):
        for (name, a), (_, b) in zip(trained.state_dict().items(), repeated.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    assert result["accuracy"] == again["accuracy"]
    assert result["joint"]["mean_output_frames"] == pytest.approx(10.0, abs=1.0)  # a quarter of 40 or 33
    assert result["joint"]["guide_active"] > 0.0  # the toy clips have blank frames


def test_a_joint_run_initialises_the_classifier_as_the_baseline_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from adares import models

    joint_jobs, none_jobs, _ = _joint_setup(tmp_path, torch)
    built = []
    real = models.ConvClassifier

    def recorded(**kwargs):
        module = real(**kwargs)
        built.append({k: v.clone() for k, v in module.state_dict().items()})
        return module

    monkeypatch.setattr(models, "ConvClassifier", recorded)
    threads = torch.get_num_threads()
    try:
        for job in (joint_jobs[0], none_jobs[0]):
            screen.train_and_test({**job, "classifier": {**job["classifier"], "epochs": 1}})
    finally:
        torch.set_num_threads(threads)
    assert len(built) == 2 and built[0].keys() == built[1].keys()
    assert all(torch.equal(built[0][k], built[1][k]) for k in built[0])


@pytest.mark.parametrize(
    ("mean", "relation", "margin", "expected"),
    [
        (1.0, ">", 0.0, "yes"),
        (0.5, ">", 0.0, "no difference"),
        (0.5, ">=", 0.0, "level"),
        (-0.5, ">=", 0.0, "level"),
        (-1.0, ">=", 0.0, "**no**"),
        (-0.4, ">=", -0.5, "level"),
        (-1.7, ">=", -0.5, "**no**"),
        (0.6, ">=", -0.5, "yes"),
    ],
)
def test_verdict_calls_a_gap_within_two_standard_errors_no_difference(mean, relation, margin, expected) -> None:
    assert screen.verdict({"mean": mean, "sem": 0.3}, relation=relation, margin=margin) == expected


def test_verdict_refuses_an_unknown_relation() -> None:
    with pytest.raises(ValueError, match="relation"):
        screen.verdict({"mean": 0.0, "sem": 0.1}, relation="<", margin=0.0)


def test_claims_table_judges_each_candidate_per_task_and_on_average() -> None:
    def stats(mean: float) -> dict[str, float]:
        return {"mean": mean, "sem": 0.1}

    def entry(vs: dict[str, float]) -> dict:
        return {
            "tasks": {t: {"vs": {b: stats(m) for b, m in vs.items()}} for t in ("a", "b")},
            "mean": {"vs": {b: stats(m) for b, m in vs.items()}},
        }

    summary = {
        "none": entry({}),
        "uniform-0.75": entry({"none": -1.0}),
        "flux-0.75": entry({"none": -1.0, "uniform-0.75": 0.0}),
        "cand-0.75": entry({"none": -0.1, "uniform-0.75": 0.9, "flux-0.75": -0.9}),
    }
    lines = screen.claims_table(summary, ["a", "b"])
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| cand-0.75")}
    assert set(rows) == {">= none", "> uniform-0.75", ">= flux-0.75"}  # the 0.5 claims need cand-0.5
    assert rows[">= none"].count("level") == 3
    assert rows["> uniform-0.75"].count(": yes") == 3
    assert rows[">= flux-0.75"].count("**no**") == 3


def test_make_default_can_train_with_the_screens_classifier():
    """make_default.py --classifier screen: the screen's classifier settings, kept equal here."""
    from adares.pretrained import make_default as module

    classifier = screen.Classifier()
    for name in ("widths", "kernel_size", "pool_every", "dropout", "weight_decay"):
        assert module.SCREEN_CLASSIFIER[name] == getattr(classifier, name), name
    assert module.SCREEN_CLASSIFIER["time_masks"] == module.SCREEN_CLASSIFIER["freq_masks"] == 0


def test_model_at_exponent_configures_the_extractors_cap() -> None:
    assert screen.model_and_exponent("flux") == ("flux", None)
    assert screen.model_and_exponent("runs/x@y/compressor@0.5") == ("runs/x@y/compressor", 0.5)
    config = screen._extract_config("flux@0.5", 0.75)
    assert (config.model, config.reduction, config.min_span_exponent) == ("flux", 0.75, 0.5)
    assert screen._extract_config("default", None).min_span_exponent is None
    assert screen._name("flux@0.5", 0.75) == "flux@0.5-0.75" != screen._name("flux", 0.75)
    assert screen.trained_weights(["flux@0.5"]) == {}
    assert screen.merge_exponents(["flux", "flux@0.5", "joint"]) == {"flux": 0.0, "flux@0.5": 0.5}
    with pytest.raises(SystemExit, match="min_span_exponent"):
        screen.model_and_exponent("flux@half")
