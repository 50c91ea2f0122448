from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from adares.cli.main import main
from adares.data import FeatureDataset
from adares.errors import FeatureFileError, ParameterError
from adares.export import export, kaldi_id, to_hf, to_kaldi, to_lhotse
from adares.features import Features, load_features
from adares.pipeline import ExtractConfig, extract

from .conftest import SR, make_corpus, synth

MODELS = ("flux", "none")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One extraction output folder per model, over the same three clips."""
    root = tmp_path_factory.mktemp("export")
    make_corpus(root / "in", count=3, corrupt=False)
    folders = {}
    for model in MODELS:
        folders[model] = root / f"out-{model}"
        summary = extract(root / "in", folders[model], config=ExtractConfig(model=model, frontend={"n_mels": 40}))
        assert summary.failed == 0
    return folders


def originals(out: Path) -> dict[str, tuple[dict, Features]]:
    """Item id -> (manifest record, features read straight from the feature file)."""
    return {r["id"]: (r, load_features(out / r["output"])) for r in FeatureDataset(out).records}


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("model", MODELS)
def test_lhotse_round_trip(outputs, tmp_path, model):
    lhotse = pytest.importorskip("lhotse")
    from lhotse.features.io import close_cached_file_handles

    out, dest = outputs[model], tmp_path / "lhotse"
    summary = to_lhotse(out, dest)
    expected = originals(out)
    cuts = lhotse.CutSet.from_file(dest / "cuts.jsonl.gz")
    try:
        assert summary.items == len(cuts) == len(expected) == 3
        for cut in cuts:
            record, features = expected[cut.id]
            mel, spans = cut.load_mel(), cut.load_spans()
            assert mel.dtype == np.float32 and np.array_equal(mel, features.mel)
            assert spans.dtype == np.int64 and np.array_equal(spans, features.spans)
            assert cut.source == record["source"] and cut.meta == features.meta
            assert cut.start == 0
            if model == "none":
                hop = features.meta["hop_samples"]
                assert cut.features.frame_shift == hop / SR and cut.recording_id == cut.id
                assert np.array_equal(cut.load_features(), features.mel)
                assert cut.duration == pytest.approx(features.num_frames * hop / SR)
            else:
                assert not cut.has_features
                assert cut.duration == pytest.approx(features.num_samples / SR)
    finally:
        close_cached_file_handles()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("model", MODELS)
def test_kaldi_round_trip(outputs, tmp_path, model):
    kaldiio = pytest.importorskip("kaldiio")
    out, dest = outputs[model], tmp_path / "kaldi"
    assert to_kaldi(out, dest).items == 3
    expected = {kaldi_id(item): features for item, (_, features) in originals(out).items()}
    feats, spans = kaldiio.load_scp(str(dest / "feats.scp")), kaldiio.load_scp(str(dest / "spans.scp"))
    keys = [line.split()[0] for line in (dest / "feats.scp").read_text().splitlines()]
    assert keys == sorted(expected) and set(spans) == set(expected)
    for key, features in expected.items():
        assert feats[key].dtype == np.float32 and np.array_equal(feats[key], features.mel)
        assert spans[key].dtype == np.int32 and np.array_equal(spans[key].reshape(-1, 2), features.spans)
    durations = dict(line.split() for line in (dest / "utt2dur").read_text().splitlines())
    assert {key: float(value) for key, value in durations.items()} == {
        key: pytest.approx(features.num_samples / SR) for key, features in expected.items()
    }


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("format", ["arrow", "parquet"])
def test_hf_round_trip(outputs, tmp_path, model, format):
    datasets = pytest.importorskip("datasets")
    out, dest = outputs[model], tmp_path / "hf"
    assert to_hf(out, dest, format=format).items == 3
    if format == "arrow":
        rows = datasets.load_from_disk(str(dest))
    else:
        rows = datasets.load_dataset("parquet", data_dir=str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    assert rows.features["mel"] == datasets.Array2D(shape=(None, 40), dtype="float32")
    assert rows.features["spans"] == datasets.Array2D(shape=(None, 2), dtype="int64")
    expected = originals(out)
    assert sorted(rows["id"]) == sorted(expected)
    for row in rows.with_format("numpy"):
        record, features = expected[str(row["id"])]
        assert row["mel"].dtype == np.float32 and np.array_equal(row["mel"], features.mel)
        assert row["spans"].dtype == np.int64 and np.array_equal(row["spans"], features.spans)
        assert row["source"] == record["source"] and json.loads(str(row["meta"])) == features.meta
    assert leftovers(tmp_path) == []


def test_parquet_reads_with_pyarrow_alone(outputs, tmp_path):
    pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    to_hf(outputs["flux"], tmp_path / "hf", format="parquet")
    table = pq.read_table(next((tmp_path / "hf" / "data").glob("*.parquet")))
    expected = originals(outputs["flux"])
    for row in table.to_pylist():
        features = expected[row["id"]][1]
        assert np.array_equal(np.array(row["mel"], dtype=np.float32), features.mel)
        assert np.array_equal(np.array(row["spans"], dtype=np.int64), features.spans)


def test_unknown_target_and_format(outputs, tmp_path):
    with pytest.raises(ParameterError, match="to='csv'.*lhotse, kaldi, hf"):
        export(outputs["flux"], tmp_path / "x", to="csv")
    with pytest.raises(ParameterError, match="format='feather'"):
        to_hf(outputs["flux"], tmp_path / "x", format="feather")
    assert not (tmp_path / "x").exists()


def test_existing_dest_is_refused_unless_overwrite(outputs, tmp_path):
    pytest.importorskip("kaldiio")
    dest = tmp_path / "kaldi"
    dest.mkdir()
    to_kaldi(outputs["flux"], dest)  # an empty folder is fine
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(ParameterError, match=r"not empty: pass overwrite=True \(--overwrite\)"):
        to_kaldi(outputs["none"], dest)
    assert (dest / "mine.txt").read_text() == "keep"
    to_kaldi(outputs["none"], dest, overwrite=True)
    assert not (dest / "mine.txt").exists()
    assert (dest / "feats.scp").read_text().count(str(dest.resolve() / "feats.ark")) == 3
    assert leftovers(tmp_path) == []


def test_kaldi_ids_are_made_safe_and_collisions_refused(tmp_path):
    pytest.importorskip("kaldiio")
    assert kaldi_id("speech/a b\tc") == "speech/a_b_c"
    with pytest.raises(ParameterError, match="empty"):
        kaldi_id("")
    corpus = tmp_path / "in"
    corpus.mkdir()
    for name in ("take 1.wav", "take_1.wav"):
        sf.write(corpus / name, synth(0.3), SR)
    out = tmp_path / "out"
    extract(corpus, out, config=ExtractConfig(model="none", frontend={"n_mels": 40}))
    with pytest.raises(ParameterError, match="'take 1' and 'take_1' both become the Kaldi utterance id 'take_1'"):
        to_kaldi(out, tmp_path / "kaldi")
    assert not (tmp_path / "kaldi").exists()


def test_a_failed_export_leaves_nothing(outputs, tmp_path):
    pytest.importorskip("lhotse")
    out = tmp_path / "out"
    shutil.copytree(outputs["flux"], out)
    (out / FeatureDataset(out).records[-1]["output"]).write_bytes(b"not a feature file")
    with pytest.raises(FeatureFileError):
        to_lhotse(out, tmp_path / "lhotse")
    assert not (tmp_path / "lhotse").exists() and leftovers(tmp_path) == []


def test_hf_refuses_mixed_mel_widths(outputs, tmp_path):
    pytest.importorskip("datasets")
    out = tmp_path / "out"
    shutil.copytree(outputs["none"], out)
    for record in FeatureDataset(out).records[1:]:
        features = load_features(out / record["output"])
        Features(mel=features.mel[:, :20], spans=features.spans, meta=features.meta).save(out / record["output"])
    with pytest.raises(ParameterError, match="20 mel bins, the first item 40"):
        to_hf(out, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and leftovers(tmp_path) == []


def test_missing_package_names_the_extra(outputs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaldiio", None)  # makes `import kaldiio` raise ImportError
    with pytest.raises(ParameterError, match=r"pip install 'adares\[export\]'"):
        to_kaldi(outputs["flux"], tmp_path / "kaldi")


def test_command_line(outputs, tmp_path):
    pytest.importorskip("kaldiio")
    dest = tmp_path / "kaldi"
    result = CliRunner().invoke(main, ["export", str(outputs["flux"]), "--to", "kaldi", str(dest)])
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip()
        == f"exported 3 items to {dest} for kaldi (feats.ark, feats.scp, spans.ark, spans.scp, utt2dur)"
    )
    again = CliRunner().invoke(main, ["export", str(outputs["flux"]), "--to", "kaldi", str(dest)])
    assert again.exit_code == 2 and "pass overwrite=True (--overwrite)" in again.stderr
    unknown = CliRunner().invoke(main, ["export", str(outputs["flux"]), "--to", "csv", str(dest)])
    assert unknown.exit_code == 2 and "csv" in unknown.stderr
