from __future__ import annotations

import pytest
import torch

from adares.data import FeatureDataset, collate
from adares.errors import ParameterError
from adares.features import load_features
from adares.pipeline import ExtractConfig, extract

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
