"""Worker processes: early start of the fork server, per-process settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf

from adares.store import read_jsonl

from .conftest import SR, child_pids, python_output, synth


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_workers_reuse_freed_buffers_instead_of_faulting_in_fresh_pages():
    # A worker's loop, in miniature: a group's front end, then its arrays written to a zip in
    # memory. Minor page faults count the buffers mapped afresh from the kernel; the worker's
    # allocator settings must cut them to a fraction.
    script = (
        "import io, resource, numpy as np, torch\n"
        "from adares.frontend import MelFrontend\n"
        "from adares.workers import keep_freed_memory\n"
        "torch.set_num_threads(1)\n"
        "frontend, rng = MelFrontend(hop='5ms', n_mels=128), np.random.default_rng(0)\n"
        "def faults(groups):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(groups):\n"
        "        mel, _ = frontend(torch.from_numpy(rng.standard_normal((16, 16000), dtype=np.float32)))\n"
        "        np.savez(io.BytesIO(), *[m.numpy() for m in mel])\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "faults(5)\n"
        "untuned = faults(20)\n"
        "applied = keep_freed_memory()\n"
        "faults(5)\n"
        "print(applied, untuned, faults(20))\n"
    )
    applied, untuned, tuned = python_output(script)
    if applied != "True":
        pytest.skip("not glibc: the allocator settings do not apply")
    assert int(tuned) * 3 < int(untuned)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server")
def test_a_pool_made_after_the_early_start_uses_that_server_and_its_workers_are_set_up():
    # The workers are children of the server started early (its imports are not paid twice),
    # and each runs one torch thread.
    script = (
        "from multiprocessing import forkserver\n"
        "from adares.workers import local_pool, start_fork_server\n"
        "start_fork_server()\n"
        "early = forkserver._forkserver._forkserver_pid\n"
        "with local_pool(2) as pool:\n"
        "    pids = {pool.submit(__import__('os').getppid).result() for _ in range(4)}\n"
        "    torch_threads = pool.submit(eval, '__import__(\"torch\").get_num_threads()').result()\n"
        "print(early is not None, pids == {early}, torch_threads)\n"
    )
    assert python_output(script) == ["True", "True", "1"]


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server")
def test_stopping_the_fork_server_mid_import_ends_it_and_a_later_pool_starts_another():
    script = (
        "import os\n"
        "from multiprocessing import forkserver\n"
        "from adares.workers import local_pool, start_fork_server, stop_fork_server\n"
        "start_fork_server()\n"
        "first = forkserver._forkserver._forkserver_pid\n"
        "stop_fork_server()\n"  # at once: the server is still importing torch
        "try:\n"
        "    os.kill(first, 0)\n"
        "    gone = False\n"
        "except ProcessLookupError:\n"
        "    gone = True\n"
        "with local_pool(1) as pool:\n"
        "    parent = pool.submit(os.getppid).result()\n"
        "second = forkserver._forkserver._forkserver_pid\n"
        "stop_fork_server()\n"
        "stop_fork_server()\n"  # no server: nothing to do
        "print(gone, parent == second != first, forkserver._forkserver._forkserver_pid)\n"
    )
    assert python_output(script) == ["True", "True", "None"]


def test_stopping_without_the_standard_librarys_private_server_does_nothing(monkeypatch):
    # A server object without the private stop (another Python): its process is left alone
    # rather than killed and never reaped. A sleeping child stands in for the server.
    import subprocess
    from multiprocessing import forkserver
    from types import SimpleNamespace

    from adares.workers import stop_fork_server

    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(forkserver, "_forkserver", SimpleNamespace(_forkserver_pid=stand_in.pid))
        stop_fork_server()
        assert stand_in.poll() is None
        monkeypatch.setattr(forkserver, "_forkserver", object())
        stop_fork_server()  # no server at all: nothing happens, nothing raises
    finally:
        stand_in.kill()
        stand_in.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server")
def test_the_fork_server_runs_for_the_block_and_one_already_running_is_left_running():
    script = (
        "from multiprocessing import forkserver\n"
        "from adares.workers import fork_server, start_fork_server, stop_fork_server\n"
        "def pid():\n"
        "    return forkserver._forkserver._forkserver_pid\n"
        "with fork_server(start=False):\n"
        "    print(pid())\n"
        "with fork_server():\n"
        "    print(pid() is not None)\n"
        "print(pid())\n"
        "start_fork_server()\n"
        "mine = pid()\n"
        "with fork_server():\n"
        "    pass\n"
        "print(pid() == mine)\n"
        "stop_fork_server()\n"
    )
    assert python_output(script) == ["None", "True", "None", "True"]


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_process_ends_with_the_owner_it_watches(pidfd):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    script = (
        "import os, sys, time\n"
        "from adares import workers\n"
        + ("" if pidfd else "del os.pidfd_open\nworkers._OWNER_POLL_SECONDS = 0.05\n")
        + f"workers.end_with({owner.pid})\n"
        "print('watching', flush=True)\n"
        "time.sleep(60)\n"
    )
    watcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline().strip() == "watching"
        owner.kill()
        owner.wait()
        assert watcher.wait(timeout=20) == 1
    finally:
        for process in (owner, watcher):
            if process.poll() is None:
                process.kill()


def test_a_killed_run_leaves_no_worker_or_fork_server_behind(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(400):
        sf.write(root / f"c{i:03d}.wav", synth(1.0, seed=i), SR)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "adares.cli", "extract", str(root), str(out), "--model", "none", "-j", "2", "-q"]
    client = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(read_jsonl(out / "manifest.jsonl"))) < 5:
        time.sleep(0.02)
    pool = _descendants(client.pid)
    assert len(pool) >= 3, "the fork server and its two workers"
    client.kill()
    client.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(pid) for pid in pool):
        time.sleep(0.1)
    left = [pid for pid in pool if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # leave nothing behind, whatever the outcome
    assert left == []


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = child_pids(todo.pop())
        found += children
        todo += children
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
