"""A full, read-only or unwritable output folder stops a run at once, in one line, and a rerun resumes.

Injected errors test the logic anywhere; a small tmpfs (needs root and mount) tests the real thing.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from adares import atomic, store
from adares.cli.main import main
from adares.errors import OutputError
from adares.pipeline import ExtractConfig, extract
from adares.store import read_jsonl

from .conftest import SR, make_corpus, synth

CONFIG = ExtractConfig(frontend={"n_mels": 40}, model="none")
FULL = (
    r"cannot write to .*out: No space left on device \(ENOSPC\); {done} of {total} files are done, "
    "rerun after freeing space to resume"
)


def lines(out: Path) -> list[dict]:
    """Every line of the manifest, each of which must be a whole record."""
    if not (out / "manifest.jsonl").exists():
        return []
    text = (out / "manifest.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def fail_after(monkeypatch, count: int, code: int = errno.ENOSPC) -> None:
    """Feature files after the first ``count`` meet a full (or otherwise refusing) folder."""
    create = atomic._create_temporary
    calls = []

    def refusing(final: Path):
        calls.append(final)
        if len(calls) > count:
            raise OSError(code, os.strerror(code), str(final))
        return create(final)

    monkeypatch.setattr(atomic, "_create_temporary", refusing)


def test_a_full_folder_stops_the_run_with_the_count_and_a_rerun_resumes(tmp_path, monkeypatch):
    make_corpus(tmp_path / "in", count=7, corrupt=False)
    out = tmp_path / "out"
    fail_after(monkeypatch, 3)
    with pytest.raises(OutputError, match=FULL.format(done=3, total=7)) as caught:
        extract(tmp_path / "in", out, config=CONFIG, jobs=1, batch_size=1)
    assert caught.value.errno == errno.ENOSPC and "\n" not in str(caught.value)
    assert [r["status"] for r in lines(out)] == ["ok"] * 3  # no file blamed for the folder
    assert list(read_jsonl(out / "failures.jsonl")) == []
    assert not (out / ".adares.lock").exists()

    monkeypatch.undo()
    summary = extract(tmp_path / "in", out, config=CONFIG, jobs=1)
    assert (summary.done, summary.skipped, summary.failed) == (4, 3, 0)
    assert sorted(r["source"] for r in lines(out)) == sorted(r["source"] for r in lines(out) if r["status"] == "ok")
    assert len({r["source"] for r in lines(out)}) == len(lines(out)) == 7


@pytest.mark.parametrize(
    ("code", "advice"),
    [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"), (errno.EDQUOT, "quota")],
)
def test_every_error_of_the_folder_stops_the_run(tmp_path, monkeypatch, code, advice):
    make_corpus(tmp_path / "in", count=3, corrupt=False)
    fail_after(monkeypatch, 1, code)
    with pytest.raises(OutputError, match=rf"{advice}.*\({errno.errorcode[code]}\); 1 of 3 files are done") as caught:
        extract(tmp_path / "in", tmp_path / "out", config=CONFIG, jobs=1, batch_size=1)
    full = code == errno.EDQUOT
    assert str(caught.value).endswith("freeing space to resume" if full else "once it is writable to resume")


@pytest.mark.parametrize("where", ["opening a shard", "renaming a finished shard"])
def test_a_full_folder_stops_a_run_writing_shards(tmp_path, monkeypatch, where):
    make_corpus(tmp_path / "in", count=3, corrupt=False)
    out = tmp_path / "out"
    if where == "opening a shard":
        fail_after(monkeypatch, 0)
    else:

        def full(source, destination):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))

        monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OutputError, match=FULL.format(done=0, total=3)):
        extract(tmp_path / "in", out, config=replace(CONFIG, format="shards"), jobs=1)
    monkeypatch.undo()
    assert lines(out) == [] and not list(out.rglob("*.tar"))
    summary = extract(tmp_path / "in", out, config=replace(CONFIG, format="shards"), jobs=1)
    assert summary.done == 3 and len(lines(out)) == 3


def test_an_error_of_one_file_stays_that_files_failure(tmp_path, monkeypatch):
    make_corpus(tmp_path / "in", count=3, corrupt=True)
    fail_after(monkeypatch, 10**6, errno.ENAMETOOLONG)  # never: the broken file fails on its own
    summary = extract(tmp_path / "in", tmp_path / "out", config=CONFIG, jobs=1)
    assert (summary.done, summary.failed) == (3, 1)


def test_a_manifest_write_the_disk_refuses_leaves_whole_lines_and_the_rerun_resumes(tmp_path, monkeypatch):
    make_corpus(tmp_path / "in", count=5, corrupt=False)
    out = tmp_path / "out"
    real = os.write
    written = []

    def full_after_two(fd: int, data: bytes) -> int:
        if len(written) >= 2:  # a part, then the disk is full
            if len(data) > 7:
                return real(fd, bytes(data)[:7])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(data)
        return real(fd, data)

    monkeypatch.setattr(store.os, "write", full_after_two)
    with pytest.raises(OutputError, match=FULL.format(done=2, total=5)):
        extract(tmp_path / "in", out, config=CONFIG, jobs=1, batch_size=1)
    monkeypatch.undo()
    assert len(lines(out)) == 2
    summary = extract(tmp_path / "in", out, config=CONFIG, jobs=1)
    assert (summary.done, summary.skipped) == (3, 2) and len(lines(out)) == 5


def test_a_full_folder_met_on_an_executor_stops_the_run_and_cancels_the_rest(tmp_path, monkeypatch):
    make_corpus(tmp_path / "in", count=12, corrupt=False)
    out = tmp_path / "out"
    fail_after(monkeypatch, 0)
    with cf.ThreadPoolExecutor(2) as pool, pytest.raises(OutputError, match=FULL.format(done=0, total=12)):
        extract(tmp_path / "in", out, config=CONFIG, executor=pool, jobs=2, batch_size=1)
    assert lines(out) == [] and not (out / ".adares.lock").exists()


def test_the_command_says_it_in_one_line_and_exits_1(tmp_path, monkeypatch):
    make_corpus(tmp_path / "in", count=4, corrupt=False)
    fail_after(monkeypatch, 2)
    result = CliRunner().invoke(
        main, ["extract", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "none", "-j", "1", "-q"]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"Error: cannot write to {tmp_path / 'out'}: No space left on device (ENOSPC); "
        "0 of 4 files are done, rerun after freeing space to resume"  # the run's one batch was not finished
    ]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MB tmpfs, mounted for the test (root only)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _cli(*args: str, jobs: int = 1) -> subprocess.CompletedProcess:
    options = ["--model", "none", "--n-mels", "40", "-j", str(jobs)]
    command = [sys.executable, "-m", "adares.cli", "extract", *args, *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_full_tmpfs_then_a_read_only_one_then_a_clean_resume(tmp_path, small_tmpfs):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(60):  # about 2 MB of features for a 1 MB folder
        sf.write(root / f"c{i:02d}.wav", synth(1.0, seed=i), SR)
    out = small_tmpfs / "out"
    full = _cli(str(root), str(out), "-q", jobs=2)  # met in the workers
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    [line] = full.stderr.splitlines()
    done = len(lines(out))  # every line whole, every record ok
    assert 0 < done < 60 and {r["status"] for r in lines(out)} == {"ok"}
    assert line == (
        f"Error: cannot write to {out}: No space left on device (ENOSPC); {done} of 60 files are done, "
        "rerun after freeing space to resume"
    )
    assert not list(out.rglob(f"*{atomic.TEMP_MARKER}*"))

    subprocess.run(["mount", "-o", "remount,size=8m,ro", str(small_tmpfs)], check=True)
    read_only = _cli(str(root), str(out), "-q")
    assert read_only.returncode == 1 and "Traceback" not in read_only.stderr, read_only.stderr
    assert read_only.stderr.splitlines() == [
        f"Error: cannot write to {out}: Read-only file system (EROFS); rerun once it is writable to resume"
    ]

    subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    resumed = _cli(str(root), str(out), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(out.glob("*.npz"))) == 60 and len(lines(out)) == 60
    assert len({r["source"] for r in lines(out)}) == 60 and not (out / ".adares.lock").exists()
