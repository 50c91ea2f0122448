from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from adares.errors import ParameterError
from adares.features import load_features
from adares.pipeline import ExtractConfig, extract
from adares.store import read_jsonl

from .conftest import make_corpus

distributed = pytest.importorskip("distributed")

CONFIG = ExtractConfig(frontend={"n_mels": 40}, model="none")
TIMINGS = {"run", "seconds"}


def records(out):
    return sorted(
        ({k: v for k, v in r.items() if k not in TIMINGS} for r in read_jsonl(out / "manifest.jsonl")), key=str
    )


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


@pytest.mark.slow
def test_dask_run_equals_local_run(tmp_path, cluster):
    root = tmp_path / "in"
    make_corpus(root, count=8, corrupt=True)
    local = extract(root, tmp_path / "local", config=CONFIG, jobs=1)
    dask = extract(
        root, tmp_path / "dask", config=CONFIG, jobs=2, executor=cluster.get_executor(retries=2), batch_size=2
    )
    assert (dask.done, dask.failed, dask.exit_code) == (local.done, local.failed, 1) == (8, 1, 1)
    for path in (tmp_path / "local").rglob("*.npz"):
        a, b = load_features(path), load_features(tmp_path / "dask" / path.relative_to(tmp_path / "local"))
        np.testing.assert_array_equal(a.mel, b.mel)
        np.testing.assert_array_equal(a.spans, b.spans)
        assert a.meta == b.meta
    assert records(tmp_path / "local") == records(tmp_path / "dask")
    assert list(read_jsonl(tmp_path / "dask" / "failures.jsonl"))[0]["source"] == "speech/broken.wav"


@pytest.mark.slow
def test_killed_dask_worker_is_retried(tmp_path, cluster):
    root = tmp_path / "in"
    make_corpus(root, count=30, corrupt=False, seconds=1.0)
    pids = cluster.run(os.getpid)
    victim = next(iter(pids.values()))
    killed = []

    def kill_once(record):
        if not killed:
            os.kill(victim, signal.SIGKILL)  # the nanny restarts it; Dask reruns its tasks
            killed.append(victim)

    summary = extract(
        root,
        tmp_path / "out",
        config=CONFIG,
        jobs=2,
        executor=cluster.get_executor(retries=2),
        batch_size=1,
        on_record=kill_once,
    )
    assert killed
    assert (summary.done, summary.failed) == (30, 0)
    assert len(list((tmp_path / "out").rglob("*.npz"))) == 30


def test_dask_executor_needs_exactly_one_target(monkeypatch):
    from adares.cluster import dask_executor

    monkeypatch.delenv("ADARES_SCHEDULER", raising=False)
    with pytest.raises(ParameterError, match="either"), dask_executor():
        pass
    with pytest.raises(ParameterError, match="either"), dask_executor(scheduler="tcp://127.0.0.1:1", local_workers=1):
        pass


def test_unreachable_scheduler_is_a_clear_error():
    from adares.cluster import dask_executor

    with pytest.raises(ParameterError, match="cannot reach"), dask_executor(scheduler="tcp://127.0.0.1:1", timeout_s=1):
        pass


def _worker_state() -> tuple[bool, int]:
    import torch

    return "adares-worker-setup" in distributed.get_worker().plugins, torch.get_num_threads()


@pytest.mark.slow
def test_a_local_cluster_started_for_the_run_sets_up_its_workers_like_the_pool():
    from adares.cluster import dask_executor

    with dask_executor(local_workers=1) as run:
        assert run.threads == 1
        assert run.executor.submit(_worker_state).result(timeout=120) == (True, 1)
