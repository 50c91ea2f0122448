"""One run writes an output folder at a time: a second is refused at once, a killed run's lock is taken over."""

from __future__ import annotations

import concurrent.futures as cf
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from adares.errors import OutputError, OutputLockedError
from adares.pipeline import ExtractConfig, extract
from adares.pipeline import lock as lock_module
from adares.pipeline.lock import LOCK_NAME, OutputLock
from adares.store import read_jsonl

from .conftest import make_corpus

CONFIG = ExtractConfig(frontend={"n_mels": 40}, model="none")
HOLD = """
import sys, time
from adares.pipeline.lock import OutputLock
OutputLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_run_is_refused_at_once_and_writes_nothing(tmp_path):
    make_corpus(tmp_path / "in", count=2, corrupt=False)
    out = tmp_path / "out"
    extract(tmp_path / "in", out, config=CONFIG, jobs=1)
    before = (out / "manifest.jsonl").read_bytes()
    with OutputLock(out):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        for executor in (None, cf.ThreadPoolExecutor(1)):  # a caller's executor (Dask): the lock is the caller's
            started = time.monotonic()
            with pytest.raises(OutputLockedError, match=rf"being written by another run \(pid {os.getpid()} on"):
                extract(tmp_path / "in", out, config=CONFIG, jobs=1, executor=executor, overwrite=True)
            assert time.monotonic() - started < 5
        assert (out / "manifest.jsonl").read_bytes() == before and (out / LOCK_NAME).exists()
    assert not (out / LOCK_NAME).exists()  # released: removed
    assert isinstance(OutputLockedError("x"), OutputError)


def test_a_run_that_makes_the_folder_takes_the_lock_then(tmp_path, monkeypatch):
    # the folder did not exist when the run began; another run made it and took the lock meanwhile
    from adares.pipeline import planning

    make_corpus(tmp_path / "in", count=1, corrupt=False)
    out = tmp_path / "out"
    other = OutputLock(out)
    resolve = planning.resolve_configuration

    def meanwhile(*args, **kwargs):
        out.mkdir()
        other.acquire()
        return resolve(*args, **kwargs)

    monkeypatch.setattr(planning, "resolve_configuration", meanwhile)
    try:
        with pytest.raises(OutputLockedError):
            extract(tmp_path / "in", out, config=CONFIG, jobs=1)
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # nothing written
    finally:
        other.release()


def _hold_in_a_process(out) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_killed_runs_lock_is_taken_over(tmp_path):
    make_corpus(tmp_path / "in", count=2, corrupt=False)
    out = tmp_path / "out"
    out.mkdir()
    process = _hold_in_a_process(out)
    try:
        with pytest.raises(OutputLockedError, match=f"pid {process.pid}"):
            extract(tmp_path / "in", out, config=CONFIG, jobs=1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == process.pid  # left behind by the kill
    summary = extract(tmp_path / "in", out, config=CONFIG, jobs=1)
    assert summary.done == 2 and not (out / LOCK_NAME).exists()


@pytest.fixture
def no_flock(monkeypatch):
    def unsupported(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", unsupported)


def test_without_flock_a_dead_process_lock_is_stale_and_a_live_one_holds(tmp_path, no_flock):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid, host, refused in (
            (dead.pid, socket.gethostname(), False),
            (live.pid, socket.gethostname(), True),
            (dead.pid, "another-host", True),  # cannot be checked from here
        ):
            (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "started": "then"}))
            lock = OutputLock(out)
            if refused:
                with pytest.raises(OutputLockedError, match=rf"\(pid {pid} on {host} since then\)"):
                    lock.acquire()
            else:
                lock.acquire()
                assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
                lock.release()
    finally:
        live.kill()
        live.wait()


def test_a_read_only_folder_is_an_output_error_not_a_lock(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real = os.open

    def read_only(path, flags, mode=0o777):
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, mode)

    monkeypatch.setattr(lock_module.os, "open", read_only)
    make_corpus(tmp_path / "in", count=1, corrupt=False)
    with pytest.raises(OutputError, match=r"out: Read-only file system \(EROFS\); rerun once") as caught:
        extract(tmp_path / "in", out, config=CONFIG, jobs=1)
    assert not isinstance(caught.value, OutputLockedError)


@pytest.mark.slow
def test_two_commands_on_one_folder_the_second_refuses(tmp_path):
    make_corpus(tmp_path / "in", count=200, corrupt=False, seconds=0.2)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "adares.cli", "extract", str(tmp_path / "in"), str(out), "--model", "none", "-q"]
    first = subprocess.Popen([*args, "-j", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "manifest.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = subprocess.run([*args, "-j", "1"], capture_output=True, text=True, timeout=60)
    _, first_stderr = first.communicate(timeout=300)
    assert first.returncode == 0, first_stderr
    assert second.returncode == 1 and "Traceback" not in second.stderr
    [line] = second.stderr.splitlines()
    assert line.startswith(f"Error: output folder {out} is being written by another run (pid {first.pid} on ")
    records = list(read_jsonl(out / "manifest.jsonl"))
    assert len(records) == 200 == len({r["source"] for r in records})  # no file done twice
