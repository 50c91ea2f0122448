"""extract(format="shards"): WebDataset tar shards, read back by webdataset and by adares; a shard
is the unit of resume, so a killed run leaves no partial shard and no sample twice."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from adares.atomic import TEMP_MARKER
from adares.data import FeatureDataset
from adares.features import load_features
from adares.pipeline import ExtractConfig, extract
from adares.store import read_features, read_jsonl

from .conftest import SR, make_corpus, synth

SMALL = {"n_mels": 40}


def config(**settings) -> ExtractConfig:
    return ExtractConfig(frontend=SMALL, **({"model": "none"} | settings))


def latest(out: Path) -> dict[str, dict]:
    return {record["source"]: record for record in read_jsonl(out / "manifest.jsonl")}


def shard_samples(out: Path) -> list[str]:
    """Keys of every sample in every shard on disk (temporary files aside), with repeats."""
    keys = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        samples = collections.defaultdict(set)
        for name in names:
            key, _, suffix = name.partition(".")
            samples[key].add(suffix)
        for key, suffixes in samples.items():
            assert {"mel.npy", "spans.npy", "json"} <= suffixes, f"partial sample {key} in {shard}"
        keys += list(samples)
    return keys


def test_shards_hold_the_npz_features_and_webdataset_reads_them(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=7)
    for model in ("none", "flux"):
        npz, shards = tmp_path / f"npz-{model}", tmp_path / f"shards-{model}"
        extract(root, npz, config=config(model=model), jobs=1)
        summary = extract(root, shards, config=config(model=model, format="shards"), jobs=1, batch_size=3)
        assert (summary.done, summary.failed) == (7, 1)
        records = {s: r for s, r in latest(shards).items() if r["status"] == "ok"}
        assert len({r["shard"] for r in records.values()}) == 3  # batches of 3: one shard each
        by_key = {}
        for sample in wds.WebDataset(sorted(str(p) for p in (shards / "shards").glob("*.tar")), shardshuffle=False):
            by_key[sample["__key__"]] = sample
        assert sorted(by_key) == sorted(r["member"] for r in records.values())
        for source, record in records.items():
            expected = load_features(npz / latest(npz)[source]["output"])
            sample = wds.autodecode.Decoder([wds.autodecode.basichandlers])(by_key[record["member"]])
            assert np.array_equal(sample["mel.npy"], expected.mel)
            assert np.array_equal(sample["spans.npy"], expected.spans)
            assert ("scores.npy" in sample) == (model != "none")
            assert sample["json"] == expected.meta
            for features in (read_features(shards, record), load_features(shards / record["output"])):
                assert np.array_equal(features.mel, expected.mel) and features.meta == expected.meta
            assert record["id"] == latest(npz)[source]["id"]
        dataset = FeatureDataset(shards)
        assert len(dataset) == 7 and dataset[0]["mel"].shape[1] == 40


def test_a_rerun_skips_what_the_shards_hold(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=5, corrupt=False)
    out = tmp_path / "out"
    extract(root, out, config=config(format="shards"), jobs=1)
    first = latest(out)
    summary = extract(root, out, config=config(format="shards"), jobs=1)
    assert (summary.done, summary.skipped) == (0, 5)
    assert latest(out) == first  # shard and member of each file as the first run recorded them
    assert all(record["shard"] and record["member"] for record in first.values())
    # a changed source is redone into a new shard; the old shard still holds the others
    sf.write(root / sorted(first)[0], synth(0.3, seed=99), SR)
    extract(root, out, config=config(format="shards"), jobs=1)
    records = latest(out)
    assert records[sorted(first)[0]]["status"] == "ok"
    assert all(read_features(out, r).mel.shape[1] == 40 for r in records.values())


def test_overwrite_removes_the_old_shards(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=4, corrupt=False)
    out = tmp_path / "out"
    extract(root, out, config=config(format="shards"), jobs=1)
    extract(root, out, config=config(format="shards"), jobs=1, overwrite=True)
    assert sorted(shard_samples(out)) == sorted(r["member"] for r in latest(out).values())


def test_float16_through_the_pipeline(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=3, corrupt=False)
    full = extract(root, tmp_path / "a", config=config(), jobs=1)
    half = extract(root, tmp_path / "b", config=config(dtype="float16", format="shards"), jobs=1)
    assert full.config_hash != half.config_hash
    for source, record in latest(tmp_path / "b").items():
        features = read_features(tmp_path / "b", record)
        expected = load_features(tmp_path / "a" / latest(tmp_path / "a")[source]["output"])
        assert features.meta == expected.meta | {"dtype": "float16"}
        assert np.array_equal(features.mel, expected.mel.astype(np.float16).astype(np.float32))


def test_a_killed_run_leaves_no_partial_shard_and_the_rerun_no_duplicate(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    count = 160
    for i in range(count):
        sf.write(root / f"c{i:03d}.wav", synth(1.0, seed=i), SR)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "adares.cli", "extract", str(root), str(out), "--n-mels", "40"]
    args += ["--model", "none", "--format", "shards", "-j", "2", "--quiet"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "shards").glob("*.tar")):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = [r for r in read_jsonl(out / "manifest.jsonl") if r.get("status") == "ok"]
    assert len(recorded) < count, "the kill must land mid-run"
    assert len(shard_samples(out)) < count  # every shard on disk is whole (checked in shard_samples)

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    keys = shard_samples(out)
    assert len(keys) == len(set(keys)) == count
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))
    records = latest(out)
    assert len(records) == count and {r["status"] for r in records.values()} <= {"ok", "skipped"}
    assert sorted(r["member"] for r in records.values()) == sorted(keys)


@pytest.mark.parametrize("bound", [{"shard_files": 2}, {"shard_bytes": 40_000}])
def test_shards_are_bounded_by_files_and_bytes(tmp_path, bound):
    root = tmp_path / "in"
    make_corpus(root, count=6, corrupt=False)
    out = tmp_path / "out"
    extract(root, out, config=config(format="shards", **bound), jobs=1, batch_size=6)
    shards = list((out / "shards").glob("*.tar"))
    assert len(shards) >= 3
    if "shard_files" in bound:
        assert all(len(tarfile.open(s).getnames()) == 2 * 3 for s in shards)
    else:  # a sample larger than the bound gets a shard of its own
        assert all(s.stat().st_size <= 40_000 or len(tarfile.open(s).getnames()) == 3 for s in shards)
    assert len(shard_samples(out)) == 6


def test_inspect_reads_a_shard_and_one_of_its_samples(tmp_path):
    from click.testing import CliRunner

    from adares.cli.main import main

    root = tmp_path / "in"
    make_corpus(root, count=2, corrupt=False)
    out = tmp_path / "out"
    extract(root, out, config=config(format="shards"), jobs=1)
    record = next(iter(latest(out).values()))
    listing = CliRunner().invoke(main, ["inspect", str(out / record["shard"])])
    assert listing.exit_code == 0 and "2 samples" in listing.output and record["member"] in listing.output
    one = CliRunner().invoke(main, ["inspect", str(out / record["output"])])
    assert one.exit_code == 0 and "x 40 mels" in one.output
    missing = CliRunner().invoke(main, ["inspect", f"{out / record['shard']}#nothing"])
    assert missing.exit_code == 1 and "no such sample" in missing.output
