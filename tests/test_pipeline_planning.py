"""Planning a run: the configuration hash resolved in one place, resume, and the output folder."""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool

import pytest

from adares.errors import ConfigMismatchError
from adares.pipeline.config import ExtractConfig, identity_hash
from adares.pipeline.planning import Corpus, resolve_configuration
from adares.store import Manifest, rewrite_jsonl

from .conftest import make_corpus

CONFIG = ExtractConfig(frontend={"n_mels": 40}, model="none")


def settled(*, result=None, error=None) -> cf.Future:
    future: cf.Future = cf.Future()
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
    return future


def manifest_with(tmp_path, *records) -> Manifest:
    rewrite_jsonl(tmp_path / "manifest.jsonl", records)
    return Manifest(tmp_path / "manifest.jsonl")


def test_a_workers_description_comes_first_then_an_earlier_request_then_a_build_here(tmp_path):
    earlier = {"source": "a.wav", "status": "ok", "config": "0123456789abcdef", "request": CONFIG.request_hash()}
    manifest = manifest_with(tmp_path, earlier)
    described = settled(result={"any": "identity"})
    resolved = resolve_configuration(CONFIG, manifest=manifest, described=described, overwrite=False)
    assert (resolved.config_hash, resolved.extractor) == (identity_hash({"any": "identity"}), None)

    # a worker that died is no answer: the manifest's, for the same request
    broken = settled(error=BrokenProcessPool("gone"))
    resolved = resolve_configuration(CONFIG, manifest=manifest, described=broken, overwrite=False)
    assert (resolved.config_hash, resolved.request, resolved.extractor) == (earlier["config"], earlier["request"], None)

    # overwrite, or another request: built here
    for overwrite, config in ((True, CONFIG), (False, ExtractConfig(frontend={"n_mels": 32}, model="none"))):
        resolved = resolve_configuration(config, manifest=manifest, described=None, overwrite=overwrite)
        assert resolved.extractor is not None
        assert resolved.config_hash == config.config_hash(resolved.extractor) != earlier["config"]


def test_a_setting_a_worker_refused_is_raised_here(tmp_path):
    refused = settled(error=ValueError("bad hop"))
    with pytest.raises(ValueError, match="bad hop"):
        resolve_configuration(CONFIG, manifest=manifest_with(tmp_path), described=refused, overwrite=False)


def test_unchanged_finished_files_are_skipped_and_the_rest_planned(tmp_path):
    make_corpus(tmp_path / "in", count=3, corrupt=False)
    corpus = Corpus.find(tmp_path / "in", tmp_path / "out", format="npz", extensions=["wav", "flac"])
    tasks = corpus.tasks()
    assert corpus.may_have_work(overwrite=False)
    corpus.prepare_output(config_hash="c1", overwrite=False)
    with corpus.manifest:
        for task in tasks:
            (corpus.out / task.output_rel).parent.mkdir(parents=True, exist_ok=True)
            (corpus.out / task.output_rel).write_bytes(b"")
            corpus.manifest.append(
                {
                    "source": task.source_rel,
                    "output": task.output_rel,
                    "status": "ok",
                    "config": "c1",
                    "source_size": task.size,
                    "source_mtime_ns": task.mtime_ns,
                }
            )
    assert not corpus.may_have_work(overwrite=False) and corpus.may_have_work(overwrite=True)
    (corpus.out / tasks[1].output_rel).unlink()  # its output is gone: planned again
    skipped, todo = corpus.split(tasks, config_hash="c1")
    assert [entry.source for entry in skipped] == [tasks[0].source_rel, tasks[2].source_rel]
    assert {entry.status for entry in skipped} == {"ok"} and todo == [tasks[1]]
    _, todo = corpus.split(tasks, config_hash="c2")  # another configuration finished nothing
    assert todo == tasks

    with pytest.raises(ConfigMismatchError, match=r"overwrite=True \(--overwrite\)"):
        corpus.prepare_output(config_hash="c2", overwrite=False)
    corpus.prepare_output(config_hash="c2", overwrite=True)
    assert len(corpus.manifest) == 0 and corpus.manifest.path.read_text() == ""


def test_min_span_exponent_enters_the_hashes_only_when_it_changes_the_output():
    flux = ExtractConfig(model="flux", reduction=0.75)
    zero = ExtractConfig(model="flux", reduction=0.75, min_span_exponent=0.0)
    capped = ExtractConfig(model="flux", reduction=0.75, min_span_exponent=0.5)
    hashes = [config.config_hash(config.build_extractor()) for config in (flux, zero, capped)]
    # Unset (the flux's own 0) and an explicit 0 write the same files; a cap writes others.
    assert hashes[0] == hashes[1] != hashes[2]
    assert "min_span_exponent" not in flux.identity(flux.build_extractor())
    assert capped.identity(capped.build_extractor())["min_span_exponent"] == 0.5
    assert len({flux.request_hash(), zero.request_hash(), capped.request_hash()}) == 3
