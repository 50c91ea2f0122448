from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from adares.data import FeatureDataset, collate
from adares.errors import ParameterError
from adares.features import load_features
from adares.pipeline import ExtractConfig, extract
from adares.sampling import BucketBatchSampler

from .conftest import make_corpus


@pytest.fixture
def extracted(tmp_path):
    root = tmp_path / "in"
    names = make_corpus(root, count=5, corrupt=True)
    out = tmp_path / "out"
    extract(root, out, config=ExtractConfig(frontend={"n_mels": 40}, model="flux", reduction=0.5), jobs=1)
    return out, names


def test_dataset_lists_successful_files_and_loads_them(extracted):
    out, names = extracted
    dataset = FeatureDataset(out)
    assert len(dataset) == 5  # the corrupt file is not an item
    item = dataset[0]
    features = load_features(out / dataset.records[0]["output"])
    torch.testing.assert_close(item["mel"], torch.from_numpy(features.mel))
    assert item["length"] == features.num_frames and item["mel"].shape[1] == 40


def test_labels_from_a_mapping_become_class_indices(extracted):
    out, names = extracted
    labels = {name: name.split("/")[0] for name in names if "broken" not in name}
    del labels[next(iter(labels))]  # unlabelled files are left out
    dataset = FeatureDataset(out / "manifest.jsonl", labels=labels)
    assert len(dataset) == 4 and dataset.classes == ["music", "speech"]
    assert sorted({dataset[i]["label"] for i in range(4)}) == [0, 1]
    by_source = FeatureDataset(out, labels=lambda record: len(record["source"]))
    assert by_source.classes is None and by_source[0]["label"] == len(by_source.records[0]["source"])


def test_collate_pads_with_lengths_and_mask(extracted):
    out, _ = extracted
    dataset = FeatureDataset(out)
    items = [dataset[i] for i in range(len(dataset))]
    batch = collate(items, pad_value=-20.0)
    lengths = [item["length"] for item in items]
    assert len(set(lengths)) > 1  # the corpus has clips of different durations
    assert batch["mel"].shape == (5, max(lengths), 40)
    assert batch["lengths"].tolist() == lengths
    for row, item in enumerate(items):
        n = item["length"]
        torch.testing.assert_close(batch["mel"][row, :n], item["mel"])
        assert bool(batch["mask"][row, :n].all()) and not bool(batch["mask"][row, n:].any())
        assert bool((batch["mel"][row, n:] == -20.0).all()) and bool((batch["spans"][row, n:] == -1).all())
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    assert sum(len(b["ids"]) for b in loader) == 5


def test_errors(tmp_path):
    with pytest.raises(ParameterError, match="manifest"):
        FeatureDataset(tmp_path)
    with pytest.raises(ParameterError, match="empty"):
        collate([])


def test_hdf5_features_load_like_npz(tmp_path):
    pytest.importorskip("h5py")
    make_corpus(tmp_path / "in", count=2, corrupt=False)
    for format in ("npz", "hdf5"):
        config = ExtractConfig(frontend={"n_mels": 40}, model="none", format=format)
        extract(tmp_path / "in", tmp_path / format, config=config, jobs=1)
    npz, hdf5 = FeatureDataset(tmp_path / "npz"), FeatureDataset(tmp_path / "hdf5")
    assert [r["output"][-3:] for r in hdf5.records] == [".h5", ".h5"]
    for index in range(2):
        torch.testing.assert_close(hdf5[index]["mel"], npz[index]["mel"])
        assert hdf5.features(index).meta == npz.features(index).meta


def synthetic_manifest(folder, count: int) -> None:
    """A manifest of ``count`` finished files in speaker folders, as ``adares extract`` writes it."""
    lines = []
    for index in range(count):
        source = f"speaker{index % 997:04d}/utterance{index:07d}.wav"
        record = {
            "status": "ok",
            "source": source,
            "output": source[:-4] + ".npz",
            "id": source[:-4],
            "output_frames": 50 + (index * 7919) % 3000,
            "fine_frames": 100 + (index * 7919) % 6000,
            "duration": 1.0 + (index % 30),
            "config": "0123456789abcdef",
            "run": "run-1",
            "source_size": 1000 + index,
            "source_mtime_ns": 1700000000000000000 + index,
        }
        lines.append(json.dumps(record, sort_keys=True))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_a_hundred_thousand_records_are_columns_that_pickle_small(tmp_path):
    synthetic_manifest(tmp_path, 100_000)
    dataset = FeatureDataset(tmp_path, labels=lambda record: "even" if record["output_frames"] % 2 == 0 else "odd")
    assert len(dataset) == 100_000 and dataset.classes == ["even", "odd"]
    blob = pickle.dumps(dataset)
    print(f"pickled: {len(blob)} bytes for {len(dataset)} records")
    assert len(blob) < 1_000_000
    copy = pickle.loads(blob)
    for index in (0, 1, 54_321, 99_999):
        assert copy.record(index) == dataset.record(index)
    assert np.array_equal(copy.lengths, dataset.lengths)
    record = dataset.record(54_321)
    assert record["output"] == record["source"][:-4] + ".npz" and record["id"] == record["source"][:-4]
    assert record["label"] == record["output_frames"] % 2  # the index of "even" or "odd"
    assert dataset.records[-1] == dataset.record(99_999)
    # No Python object per item: everything the dataset holds is a few arrays.
    held = [value for value in vars(dataset).values() if isinstance(value, np.ndarray)]
    held += [dataset._strings.buffer, dataset._strings.offsets, *dataset._numbers.values()]
    assert sum(array.nbytes for array in held) < 200 * len(dataset)  # the paths themselves are 92 bytes
    assert all(not isinstance(value, list) or len(value) < 10 for value in vars(dataset).values())


def test_lengths_come_from_the_manifest_or_the_files(extracted):
    out, _ = extracted
    dataset = FeatureDataset(out)
    assert dataset.lengths.tolist() == [dataset[i]["length"] for i in range(len(dataset))]
    manifest = out / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    manifest.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "output_frames"}) + "\n" for r in records)
    )
    older = FeatureDataset(out)
    assert "output_frames" not in older.record(0)
    assert older.lengths.tolist() == dataset.lengths.tolist()


def test_shards_load_like_npz_through_a_bucketing_loader(tmp_path):
    make_corpus(tmp_path / "in", count=6, corrupt=False)
    for format in ("npz", "shards"):
        config = ExtractConfig(frontend={"n_mels": 40}, model="flux", reduction=0.5, format=format)
        extract(tmp_path / "in", tmp_path / format, config=config, jobs=1)
    npz, shards = FeatureDataset(tmp_path / "npz"), FeatureDataset(tmp_path / "shards")
    assert all("shard" in record and "member" in record for record in shards.records)
    assert np.array_equal(npz.lengths, shards.lengths)
    sampler = BucketBatchSampler(shards.lengths, max_frames=int(shards.lengths.max()) * 2, seed=0)
    loader = torch.utils.data.DataLoader(shards, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    seen = {}
    for batch in loader:
        for row, item_id in enumerate(batch["ids"]):
            seen[item_id] = batch["mel"][row, : batch["lengths"][row]]
    assert len(seen) == 6
    for index in range(len(npz)):
        item = npz[index]
        torch.testing.assert_close(seen[item["id"]], item["mel"])


def test_records_are_a_sequence_that_slices(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=4, corrupt=False)
    extract(root, tmp_path / "out", config=ExtractConfig(frontend={"n_mels": 24}, model="none"), jobs=1)
    records = FeatureDataset(tmp_path / "out").records
    assert [r["source"] for r in records[1:3]] == [records[1]["source"], records[2]["source"]]
    assert records[-1] == records[len(records) - 1] and records[::-1][0] == records[-1]
