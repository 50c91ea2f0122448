from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from adares.atomic import TEMP_MARKER
from adares.errors import ParameterError
from adares.features import load_features
from adares.frontend import MelFrontend
from adares.pipeline import ConfigMismatchError, ExtractConfig, discover, extract
from adares.store import read_jsonl

from .conftest import SR, child_pids, make_corpus, python_output, synth

SMALL = {"n_mels": 40}


def config(**frontend) -> ExtractConfig:
    return ExtractConfig(frontend=SMALL | frontend, model="none")


def manifest(out: Path) -> list[dict]:
    return list(read_jsonl(out / "manifest.jsonl"))


def test_extract_writes_features_manifest_and_failures(corpus, tmp_path):
    out = tmp_path / "out"
    summary = extract(corpus, out, config=config(), jobs=1)
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (7, 6, 1, 0)
    assert summary.exit_code == 1

    frontend = MelFrontend(**SMALL)
    for rel in sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("clip*")):
        features = load_features(out / Path(rel).with_suffix(".npz"))
        samples, _ = sf.read(corpus / rel, dtype="float32")
        expected, frames = frontend(torch.from_numpy(samples))
        assert features.mel.shape == (1 + len(samples) // 80, 40) == (int(frames[0]), 40)
        np.testing.assert_allclose(features.mel, expected[0].numpy(), rtol=1e-5, atol=1e-5)
        assert features.spans[0, 0] == 0 and features.spans[-1, 1] == len(samples)
        assert features.meta["source"] == rel and features.meta["compressor"] == "none"
        assert features.meta["hop_samples"] == 80 and features.meta["num_samples"] == len(samples)
        assert features.scores is None

    records = manifest(out)
    assert len(records) == 7
    assert {r["status"] for r in records} == {"ok", "failed"}
    bad = [r for r in records if r["status"] == "failed"]
    assert [r["source"] for r in bad] == ["speech/broken.wav"]
    assert "not an audio file" in bad[0]["error"]
    ok = next(r for r in records if r["status"] == "ok")
    assert {"id", "source", "output", "duration", "fine_frames", "output_frames", "seconds", "config"} <= set(ok)
    failures = list(read_jsonl(out / "failures.jsonl"))
    assert failures == [{"source": "speech/broken.wav", "error": bad[0]["error"], "run": bad[0]["run"]}]
    assert not (out / "speech" / "broken.npz").exists()


def test_rerun_skips_done_files_and_retries_failed(corpus, tmp_path):
    out = tmp_path / "out"
    extract(corpus, out, config=config(), jobs=1)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    summary = extract(corpus, out, config=config(), jobs=1)
    assert (summary.done, summary.skipped, summary.failed) == (0, 6, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == before

    # fixing the broken file makes it succeed; a changed source is recomputed
    sf.write(corpus / "speech" / "broken.wav", synth(0.3), SR)
    changed = next(corpus.rglob("clip0.flac"))
    sf.write(changed, synth(0.7, seed=9), SR)
    summary = extract(corpus, out, config=config(), jobs=1)
    assert (summary.done, summary.skipped, summary.failed) == (2, 5, 0)
    assert summary.exit_code == 0
    assert list(read_jsonl(out / "failures.jsonl")) == []
    assert load_features(out / "music/part0/clip0.npz").num_samples == int(0.7 * SR)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_rerun_with_nothing_to_do_leaves_the_manifest_byte_for_byte(corpus, tmp_path, jobs):
    out = tmp_path / "out"
    extract(corpus, out, config=config(), jobs=1)
    (corpus / "speech" / "broken.wav").unlink()  # the one failure: nothing is left to do
    before = {name: (out / name).read_bytes() for name in ("manifest.jsonl", "failures.jsonl")}
    stamps = {name: (out / name).stat().st_mtime_ns for name in before}
    told = []
    summary = extract(corpus, out, config=config(), jobs=jobs, on_record=told.append)
    assert (summary.done, summary.skipped, summary.failed, summary.exit_code) == (0, 6, 0, 0)
    assert sorted(r["source"] for r in told) == sorted(r["source"] for r in manifest(out) if r["status"] == "ok")
    assert {r["status"] for r in told} == {"skipped"}  # the progress callback still hears of each file
    assert {name: (out / name).read_bytes() for name in before} == before
    assert {name: (out / name).stat().st_mtime_ns for name in before} == stamps  # not even rewritten
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # the lock is gone too


def test_a_file_done_again_is_recorded_once_more_and_history_is_compacted(corpus, tmp_path):
    out = tmp_path / "out"
    extract(corpus, out, config=config(), jobs=1)
    changed = next(corpus.rglob("clip0.flac"))
    for seconds in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1):
        sf.write(changed, synth(seconds, seed=9), SR)
        extract(corpus, out, config=config(), jobs=1)
    records = manifest(out)
    sources = [r["source"] for r in records]
    # each run redid the changed file and retried the broken one; once superseded records
    # outnumbered the rest the file was rewritten to the latest record of each source
    assert len(records) < 2 * 7 and len(set(sources)) == 7
    latest = {r["source"]: r for r in records}
    assert latest["music/part0/clip0.flac"]["duration"] == pytest.approx(1.1)
    assert latest["speech/broken.wav"]["status"] == "failed"


def test_other_configuration_is_refused_unless_overwrite(corpus, tmp_path):
    out = tmp_path / "out"
    extract(corpus, out, config=config(), jobs=1)
    with pytest.raises(ConfigMismatchError, match=r"another configuration.*overwrite=True \(--overwrite\)"):
        extract(corpus, out, config=config(hop="10ms"), jobs=1)
    summary = extract(corpus, out, config=config(hop="10ms"), jobs=1, overwrite=True)
    assert (summary.done, summary.skipped) == (6, 0)
    assert load_features(out / "music/part0/clip0.npz").meta["hop_samples"] == 160
    assert len(manifest(out)) == 7  # the old records were cleared


def test_overwrite_recomputes_same_configuration(corpus, tmp_path):
    out = tmp_path / "out"
    extract(corpus, out, config=config(), jobs=1)
    summary = extract(corpus, out, config=config(), jobs=1, overwrite=True)
    assert (summary.done, summary.skipped) == (6, 0)


def test_outputs_that_would_collide_keep_their_extension(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    sf.write(root / "a" / "b.wav", synth(0.2), SR)
    sf.write(root / "a" / "b.flac", synth(0.3), SR)
    sf.write(root / "a" / "c.wav", synth(0.2), SR)
    extract(root, tmp_path / "out", config=config(), jobs=1)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npz")) == [
        "a/b.flac.npz",
        "a/b.wav.npz",
        "a/c.npz",
    ]


def test_discover_filters_and_excludes_output(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=3, corrupt=False)
    (root / "notes.txt").write_text("x")
    (root / "._clip.wav").write_text("macOS junk")
    (root / "UPPER.WAV").write_bytes((root / "music/part0/clip0.flac").read_bytes())
    (root / "out").mkdir()
    (root / "out" / "old.wav").write_bytes(b"")
    found = [p.as_posix() for p in discover(root, exclude=root / "out")]
    assert found == ["UPPER.WAV", "music/part0/clip0.flac", "music/part2/clip2.wav", "speech/part1/clip1.wav"]
    assert [p.as_posix() for p in discover(root, extensions=["flac"], exclude=root / "out")] == [
        "music/part0/clip0.flac"
    ]
    with pytest.raises(ParameterError, match="does not exist"):
        discover(tmp_path / "missing")


def test_single_file_input(tmp_path):
    path = tmp_path / "one.wav"
    sf.write(path, synth(0.3), SR)
    summary = extract(path, tmp_path / "out", config=config(), jobs=1)
    assert summary.done == 1 and (tmp_path / "out" / "one.npz").is_file()


def test_process_pool_matches_in_process(corpus, tmp_path):
    extract(corpus, tmp_path / "one", config=config(), jobs=1)
    summary = extract(corpus, tmp_path / "two", config=config(), jobs=2, batch_size=2)
    assert (summary.done, summary.failed) == (6, 1)
    for path in (tmp_path / "one").rglob("*.npz"):
        a, b = load_features(path), load_features(tmp_path / "two" / path.relative_to(tmp_path / "one"))
        np.testing.assert_array_equal(a.mel, b.mel)
        np.testing.assert_array_equal(a.spans, b.spans)
    strip = {"run", "seconds", "source_mtime_ns"}
    one = sorted(({k: v for k, v in r.items() if k not in strip} for r in manifest(tmp_path / "one")), key=str)
    two = sorted(({k: v for k, v in r.items() if k not in strip} for r in manifest(tmp_path / "two")), key=str)
    assert one == two


def test_fail_fast_stops_early(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a_broken.wav").write_text("nope")
    for i in range(3):
        sf.write(root / f"b{i}.wav", synth(0.2), SR)
    summary = extract(root, tmp_path / "out", config=config(), jobs=1, fail_fast=True)
    assert summary.failed == 1 and summary.done == 0 and summary.stopped_early and summary.exit_code == 1


def test_partial_manifest_line_from_a_kill_is_ignored(corpus, tmp_path):
    out = tmp_path / "out"
    extract(corpus, out, config=config(), jobs=1)
    with open(out / "manifest.jsonl", "a") as handle:
        handle.write('{"source": "music/part0/clip0.flac", "sta')  # killed mid-line
    (out / "music" / f".clip9.npz{TEMP_MARKER}abc").write_bytes(b"half a file")
    summary = extract(corpus, out, config=config(), jobs=1)
    assert summary.skipped == 6
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert sum(1 for line in lines if not line.endswith("}")) == 1  # only the cut line is malformed
    assert [json.loads(line)["status"] for line in lines[-1:]] == ["failed"]  # the retry, on a line of its own


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "adares.cli", *args]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"model": "no/such/bundle"}, "ModelError", "no/such/bundle"),
        ({"frontend": {"sr": 22050, "hop": "5ms"}}, "ParameterError", "110.25 samples at 22050 Hz"),
    ],
)
def test_bad_settings_checked_by_a_worker_raise_here_and_write_nothing(corpus, tmp_path, settings, error, match):
    from adares import errors

    cfg = ExtractConfig(**({"model": "none"} | settings))
    with pytest.raises(getattr(errors, error), match=match):
        extract(corpus, tmp_path / "out", config=cfg, jobs=2)
    assert not (tmp_path / "out").exists()


def test_with_a_pool_this_process_never_imports_torch(corpus, tmp_path):
    # The workers build the extractor and send its settings back; this process only plans and
    # writes the manifest, so its start-up does not wait for torch.
    script = (
        "import sys\n"
        "from adares.pipeline import ExtractConfig, extract\n"
        f"summary = extract({str(corpus)!r}, {str(tmp_path / 'out')!r}, "
        "config=ExtractConfig(frontend={'n_mels': 40}, model='none'), jobs=2)\n"
        "print(summary.done, summary.failed, 'torch' in sys.modules)\n"
    )
    assert python_output(script) == ["6", "1", "False"]


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server")
def test_the_fork_server_starts_before_numpy_and_ends_with_the_run(corpus, tmp_path):
    # Its imports (torch) are the longest part of a short run: they must overlap this process's
    # own (numpy). Once the run returns, no server is left, also not after a rerun with nothing
    # to do, whose server is still importing torch when the run ends.
    script = (
        "import sys\n"
        "from multiprocessing import forkserver\n"
        "class Watch:\n"
        "    server_running = None\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy' and Watch.server_running is None:\n"
        "            Watch.server_running = forkserver._forkserver._forkserver_pid is not None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from adares.pipeline import ExtractConfig, extract\n"
        "print('numpy' in sys.modules)\n"
        "for _ in range(2):\n"
        f"    extract({str(corpus)!r}, {str(tmp_path / 'out')!r}, "
        "config=ExtractConfig(frontend={'n_mels': 40}, model='none'), jobs=2)\n"
        "    print(forkserver._forkserver._forkserver_pid)\n"
        "print(Watch.server_running)\n"
    )
    assert python_output(script) == ["False", "None", "None", "True"]


def test_a_hop_or_window_off_the_sample_grid_is_refused_before_any_worker_starts(corpus, tmp_path):
    # The likeliest typos are reported at once, with the front end's own message, instead of
    # after the workers' start-up (no torch import, no fork server).
    script = (
        "import sys\n"
        "from multiprocessing import forkserver\n"
        "from adares.errors import ParameterError\n"
        "from adares.pipeline import ExtractConfig, extract\n"
        "for setting in ({'hop': '7.3ms'}, {'win': '20.03ms'}):\n"
        "    try:\n"
        f"        extract({str(corpus)!r}, {str(tmp_path / 'out')!r}, "
        "config=ExtractConfig(frontend={'sr': 16000, **setting}, model='none'), jobs=2)\n"
        "    except ParameterError as error:\n"
        "        print(str(error).split()[0], 'not a whole number' in str(error))\n"
        "print('torch' in sys.modules, forkserver._forkserver._forkserver_pid)\n"
    )
    assert python_output(script) == ["hop", "True", "window", "True", "False", "None"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ParameterError, match="hop '7.3ms' is 116.8 samples"):
        MelFrontend(hop="7.3ms")  # the same message the front end gives


def test_sigkill_leaves_no_partial_output_and_rerun_completes(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(120):
        sf.write(root / f"c{i:03d}.wav", synth(1.0, seed=i), SR)
    out = tmp_path / "out"
    args = _cli("extract", str(root), str(out), "--n-mels", "40", "--jobs", "1", "--quiet")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(read_jsonl(out / "manifest.jsonl"))) < 10:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = list(read_jsonl(out / "manifest.jsonl"))
    assert 10 <= len(done) < 120, "the kill must land mid-run"
    for path in out.glob("*.npz"):
        load_features(path)  # every visible output is complete

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("*.npz"))) == 120
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))
    statuses = [r["status"] for r in read_jsonl(out / "manifest.jsonl")]
    assert statuses == ["ok"] * 120  # the files done before the kill are not recorded again


@pytest.mark.slow
def test_killed_worker_is_replaced_and_every_good_file_finishes(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=40, corrupt=True, seconds=1.0)
    out = tmp_path / "out"
    killed = []

    def kill_a_worker(record: dict) -> None:
        if killed:
            return
        for child in child_pids(os.getpid()):
            # the pool's workers are children of the forkserver, so grandchildren of this process
            for worker in child_pids(child):
                os.kill(worker, signal.SIGKILL)
                killed.append(worker)
                return

    summary = extract(root, out, config=config(), jobs=2, batch_size=1, on_record=kill_a_worker)
    assert killed
    # a rare failure must say what happened: the summary and the manifest
    assert (summary.done, summary.failed, summary.skipped) == (40, 1, 0), (summary, manifest(out))
    assert len(list(out.rglob("*.npz"))) == 40, sorted(p.name for p in out.rglob("*"))


def test_thread_safety_of_progress_callbacks_not_required(corpus, tmp_path):
    # on_record is called from the calling thread only
    threads = set()
    extract(corpus, tmp_path / "out", config=config(), jobs=2, on_record=lambda r: threads.add(threading.get_ident()))
    assert threads == {threading.get_ident()}


def test_files_computed_in_groups_equal_files_computed_alone(tmp_path, monkeypatch):
    from adares.pipeline import worker

    root = tmp_path / "in"
    for i, seconds in enumerate([0.3, 0.31, 0.5, 0.52, 0.05, 1.4, 0.33]):
        folder = root / f"d{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"c{i}.wav", synth(seconds, seed=i), SR)
    (root / "d0" / "broken.wav").write_text("not audio")
    monkeypatch.setattr(worker, "_BATCH_MAX_SECONDS", 1.0)  # the 1.4 s file goes alone
    for model in ("none", "flux", "default"):
        cfg = ExtractConfig(frontend=SMALL, model=model, reduction=0.75)
        out = tmp_path / f"out-{model}"
        summary = extract(root, out, config=cfg, jobs=1, batch_size=8)
        assert (summary.done, summary.failed) == (7, 1)
        extractor = cfg.build_extractor()
        for path in sorted(root.rglob("c*.wav")):
            rel = path.relative_to(root)
            grouped = load_features(out / rel.with_suffix(".npz"))
            alone = extractor(sf.read(path, dtype="float32")[0], meta={"source": rel.as_posix()})
            assert grouped.meta == alone.meta
            if model == "default":  # batch rounding of the learned estimator: see test_extractor
                np.testing.assert_allclose(grouped.mel, alone.mel, rtol=1e-4, atol=1e-4)
                assert np.abs(grouped.spans - alone.spans).max() <= 1
                continue
            np.testing.assert_allclose(grouped.mel, alone.mel, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(grouped.spans, alone.spans)
        records = {r["source"]: r for r in manifest(out)}
        assert records["d0/broken.wav"]["status"] == "failed"
        assert all(r["seconds"] > 0 for r in records.values() if r["status"] == "ok")


def test_a_group_that_fails_is_retried_file_by_file(corpus, tmp_path, monkeypatch):
    from adares.extractor import FineMelExtractor

    calls = []

    def broken_batch(self, items, *, metas):
        calls.append(len(items))
        raise RuntimeError("batched path broken")

    monkeypatch.setattr(FineMelExtractor, "batch", broken_batch)
    summary = extract(corpus, tmp_path / "out", config=config(), jobs=1)
    assert calls and summary.done == 6 and summary.failed == 1  # only the corrupt file fails


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_workers_write_the_cpu_features(corpus, tmp_path):
    extract(corpus, tmp_path / "cpu", config=config(), jobs=1)
    gpu = ExtractConfig(frontend=SMALL, model="none", device="cuda")
    summary = extract(corpus, tmp_path / "gpu", config=gpu, jobs=2)
    assert (summary.done, summary.failed) == (6, 1)
    for path in (tmp_path / "cpu").rglob("*.npz"):
        a, b = load_features(path), load_features(tmp_path / "gpu" / path.relative_to(tmp_path / "cpu"))
        np.testing.assert_allclose(b.mel, a.mel, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(b.spans, a.spans)


def test_a_rerun_with_nothing_to_do_resolves_its_configuration_without_torch(tmp_path):
    # The manifest records the hash of the request (settings as given) next to the resolved
    # configuration hash, so a no-op rerun need not build the extractor (nor import torch).
    make_corpus(tmp_path / "in", corrupt=False)
    first = extract(tmp_path / "in", tmp_path / "out", config=config(), jobs=1)
    for jobs in (1, 2):
        script = (
            "import sys\n"
            "from adares.pipeline import ExtractConfig, extract\n"
            f"summary = extract({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, "
            f"config=ExtractConfig(frontend={{'n_mels': 40}}, model='none'), jobs={jobs})\n"
            "print(summary.skipped, summary.done, summary.config_hash, 'torch' in sys.modules)\n"
        )
        assert python_output(script) == ["6", "0", first.config_hash, "False"]


@pytest.mark.filterwarnings("ignore::adares.compressor.ValidationWarning")
def test_a_changed_request_or_model_file_is_resolved_again(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(Path(str(importlib.resources.files("adares").joinpath("pretrained", "default"))), bundle)
    make_corpus(tmp_path / "in", count=2, corrupt=False)
    builds = []
    build = ExtractConfig.build_extractor
    monkeypatch.setattr(ExtractConfig, "build_extractor", lambda self: builds.append(self) or build(self))
    model = ExtractConfig(frontend=SMALL, model=str(bundle))
    first = extract(tmp_path / "in", tmp_path / "out", config=model, jobs=1)
    assert (first.done, len(builds)) == (2, 1)
    again = extract(tmp_path / "in", tmp_path / "out", config=model, jobs=1)
    assert (again.skipped, again.config_hash, len(builds)) == (2, first.config_hash, 1)
    # the bundle's files changed (same bytes, new time): resolved again, same configuration
    weights = bundle / "weights.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = extract(tmp_path / "in", tmp_path / "out", config=model, jobs=1)
    assert (touched.skipped, touched.config_hash, len(builds)) == (2, first.config_hash, 2)
    # another setting: resolved, and refused as another configuration
    with pytest.raises(ConfigMismatchError):
        extract(tmp_path / "in", tmp_path / "out", config=replace(model, reduction=0.75), jobs=1)
    assert len(builds) == 3
    # --overwrite always resolves
    extract(tmp_path / "in", tmp_path / "out", config=model, jobs=1, overwrite=True)
    assert len(builds) == 4
