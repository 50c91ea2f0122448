"""The fork server's preload: loaded once for the workers, and a server that ends at once."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import python_output


def test_imported_outside_the_fork_server_it_only_imports():
    script = (
        "import atexit, adares.extractor, adares.pipeline\n"
        "before = atexit._ncallbacks()\n"
        "import adares.worker_server as server\n"
        "print(server.imported_by_fork_server(), server.SKIPS_TEARDOWN, atexit._ncallbacks() - before)\n"
    )
    assert python_output(script) == ["False", "False", "0"]


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server")
def test_the_fork_server_ends_without_the_interpreters_clean_up(tmp_path: Path):
    # An exit handler the server registers before the preload (a module preloaded first) would
    # run in a normal interpreter shutdown; the server skips that shutdown, so it never runs.
    # python_output returns once the server closed its copy of the output, i.e. has ended. (The
    # server finds the marker module through PYTHONPATH: it does not take the client's sys.path.)
    marker = tmp_path / "clean-up-ran"
    (tmp_path / "exit_marker.py").write_text(
        textwrap.dedent(
            f"""
            import atexit, pathlib
            atexit.register(pathlib.Path({str(marker)!r}).touch)
            """
        )
    )
    script = textwrap.dedent(
        f"""
        import os
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [{str(tmp_path)!r}, os.environ.get("PYTHONPATH")]))
        from adares import workers
        workers._PRELOAD.insert(0, "exit_marker")
        with workers.local_pool(1) as pool:
            print(pool.submit(eval, "__import__('adares.worker_server').worker_server.SKIPS_TEARDOWN").result())
        """
    )
    assert python_output(script) == ["True"]
    assert not marker.exists()


def test_a_python_without_the_server_function_keeps_the_ordinary_exit(monkeypatch):
    from multiprocessing import forkserver

    import adares.worker_server as server

    monkeypatch.delattr(forkserver, "main")
    assert server.imported_by_fork_server() is False
