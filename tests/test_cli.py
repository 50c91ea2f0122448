from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from adares.cli.main import main
from adares.store import read_jsonl

from .conftest import make_corpus, python_output


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_shows_defaults():
    result = run("extract", "--help")
    assert result.exit_code == 0
    expected = ("--hop", "[default: 5ms]", "--n-mels", "default: 128; kaldi preset 80", "--jobs", "--fail-fast")
    for text in (*expected, "--overwrite", "default]"):
        assert text in result.output


def test_exit_codes_and_summary(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=3, corrupt=True)
    result = run("extract", str(root), str(tmp_path / "out"), "--n-mels", "40", "-j", "1")
    assert result.exit_code == 1
    assert "done 3, skipped 0 (already done), failed 1 of 4 files" in result.stderr
    assert "speech/broken.wav: not an audio file" in result.stderr

    (root / "speech" / "broken.wav").unlink()
    result = run("extract", str(root), str(tmp_path / "out"), "--n-mels", "40", "-j", "1")
    assert result.exit_code == 0
    assert "skipped 3" in result.stderr


def test_default_model_is_the_shipped_compressor(tmp_path):
    from adares import Compressor, load_features
    from adares.functional.merge import output_lengths

    root = tmp_path / "in"
    make_corpus(root, count=2, corrupt=False)
    assert run("extract", str(root), str(tmp_path / "out"), "-j", "1", "-q").exit_code == 0
    path = sorted((tmp_path / "out").rglob("*.npz"))[0]
    features = load_features(path)
    assert features.meta["compressor"] == "default"
    assert features.meta["compressor_sha256"] == Compressor.from_pretrained("default").sha256
    fine = 1 + int(features.meta["num_samples"]) // 80
    assert features.mel.shape[0] == int(output_lengths(fine, reduction=0.5)) == (fine + 1) // 2
    assert features.scores.shape == (fine,)


def test_bad_usage_exits_2_with_one_line(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=1, corrupt=False)
    result = run("extract", str(root), str(tmp_path / "out"), "--hop", "5ms", "--sr", "22050")
    assert result.exit_code == 2
    assert "110.25" in result.stderr and "Traceback" not in result.stderr
    assert run("extract", str(tmp_path / "missing"), str(tmp_path / "out")).exit_code == 2
    assert run("extract", str(root), str(tmp_path / "out"), "--reduction", "1.5").exit_code == 2
    assert run("extract", str(root), str(tmp_path / "out"), "--min-span-exponent", "1.5").exit_code == 2
    result = run("extract", str(root), str(tmp_path / "out"), "--model", "none", "--min-span-exponent", "0.5")
    assert result.exit_code == 2 and "keeps every fine frame" in result.stderr and "Traceback" not in result.stderr


def test_configuration_mismatch_exits_2(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=1, corrupt=False)
    assert run("extract", str(root), str(tmp_path / "out"), "--n-mels", "40", "-j", "1", "-q").exit_code == 0
    result = run("extract", str(root), str(tmp_path / "out"), "--n-mels", "64", "-j", "1", "-q")
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    result = run("extract", str(root), str(tmp_path / "out"), "--n-mels", "64", "-j", "1", "-q", "--overwrite")
    assert result.exit_code == 0 and result.stderr == ""
    records = list(read_jsonl(tmp_path / "out" / "manifest.jsonl"))
    assert [r["status"] for r in records] == ["ok"]


def test_plain_progress_lines_when_not_a_terminal(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=2, corrupt=False)
    result = run("extract", str(root), str(tmp_path / "out"), "--n-mels", "40", "-j", "1")
    assert "2 files to process" in result.stderr
    assert "[2/2]" in result.stderr and "ETA" in result.stderr


@pytest.mark.slow
def test_console_script_runs(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=2, corrupt=False)
    done = subprocess.run(
        [sys.executable, "-m", "adares.cli", "extract", str(root), str(tmp_path / "out"), "--n-mels", "40", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])["status"] == "ok"


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server")
def test_extract_starts_its_workers_before_it_imports_numpy(tmp_path):
    # The workers' start-up (torch) is the longest part of a short run; it must not wait for
    # this process's own imports. `--help` imports no numpy at all.
    root = tmp_path / "in"
    make_corpus(root, count=2, corrupt=False)
    script = f"""
import sys
from multiprocessing import forkserver

class Watch:
    server_running = None

    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and Watch.server_running is None:
            Watch.server_running = forkserver._forkserver._forkserver_pid is not None

sys.meta_path.insert(0, Watch())
from adares.cli.main import main

def run(*args):
    try:
        main(list(args), standalone_mode=False)
    except SystemExit as end:
        assert not end.code, end.code
    print("numpy imported after the server started:", Watch.server_running)

run("extract", "--help")
run("extract", {str(root)!r}, {str(tmp_path / "out")!r}, "--model", "none", "-j", "2", "-q")
"""
    assert [line for line in python_output(script) if line in ("None", "True", "False")] == ["None", "True"]


def _fork_servers_of(pid: int) -> list[int]:
    """The fork servers among the children of process ``pid`` (Linux: read from /proc)."""
    servers = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):  # not a process, or gone meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"forkserver" in command:
            servers.append(int(entry.name))
    return servers


def _loading_torch(pids: list[int]) -> bool:
    """Whether one of ``pids`` has mapped torch's C++ library (early in ``import torch``)."""
    for pid in pids:
        try:
            if "libtorch" in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:
            continue
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX process groups; /proc")
@pytest.mark.parametrize("moment", ["while the workers start", "while files are written"])
def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tmp_path, moment):
    # Ctrl-C reaches the whole process group: the command, its fork server (maybe still
    # importing torch) and its workers. Only the command may speak ("Aborted!"): no traceback
    # from any of them, no process left behind, no half-written file; the rerun does the rest.
    import os
    import signal
    import time

    root = tmp_path / "in"
    make_corpus(root, count=300, corrupt=False, seconds=0.2)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "adares.cli", "extract", str(root), str(out), "--model", "none", "-j", "2", "-q"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    if moment == "while the workers start":  # the server has begun loading torch: seconds of imports left
        while not _loading_torch(_fork_servers_of(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        manifest = out / "manifest.jsonl"
        while not (manifest.exists() and manifest.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)  # returns once every process holding the output ended
    assert process.returncode in (0, 1), stderr  # 0: it finished before the signal landed
    assert "Traceback" not in stderr.decode(), stderr.decode()
    assert not list(out.rglob("*adares-tmp*")) if out.exists() else True
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.rglob("*.npz"))) == 300
