"""Tests of adares.atomic: write-then-rename, permissions, temporary names, clean-up."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from adares import atomic
from adares.errors import OutputError


def test_atomic_open_writes_creates_folders_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    with atomic.atomic_open(target, "wb") as handle:
        handle.write(b"payload")
        assert not target.exists()  # nothing under the final name until the block succeeds
    assert target.read_bytes() == b"payload"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]
    atomic.atomic_write_text(target, "replaced")
    assert target.read_text() == "replaced"


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), atomic.atomic_open(target, "wb") as handle:
        handle.write(b"half of the new")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask_like_any_new_file(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        atomic.atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == expected


def test_temporary_names_are_marked_and_unique(tmp_path, monkeypatch):
    seen = []
    original = os.replace

    def spy(source, destination):
        seen.append(os.path.basename(source))
        original(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    for _ in range(50):
        atomic.atomic_write_text(tmp_path / "x.txt", "x")
    assert len(set(seen)) == 50
    assert all(name.startswith(".x.txt" + atomic.TEMP_MARKER) for name in seen)


def test_a_colliding_temporary_name_is_skipped_not_shared(tmp_path, monkeypatch):
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens))
    monkeypatch.setattr(atomic, "_COUNTER", iter([7, 7, 7]))
    squatter = tmp_path / f".x.txt{atomic.TEMP_MARKER}{os.getpid()}-7-aaaaaa"
    squatter.write_bytes(b"another writer's")
    atomic.atomic_write_text(tmp_path / "x.txt", "mine")
    assert (tmp_path / "x.txt").read_text() == "mine"
    assert squatter.read_bytes() == b"another writer's"


def test_remove_stale_temporaries_only_removes_marked_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / f".x.npz{atomic.TEMP_MARKER}123-0-abcdef").write_bytes(b"half")
    (tmp_path / "a" / "keep.npz").write_bytes(b"whole")
    (tmp_path / "a" / ".hidden").write_bytes(b"not ours")
    assert atomic.remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".hidden", "keep.npz"]


@pytest.mark.parametrize("code", sorted(atomic.OUTPUT_ERRNOS))
def test_a_full_or_unwritable_folder_raises_output_error_and_leaves_nothing(tmp_path, code):
    target = tmp_path / "x.bin"
    with pytest.raises(OutputError, match=r"cannot write .*x\.bin: .*\(E[A-Z]+\)") as caught:
        with atomic.atomic_open(target, "wb") as handle:
            handle.write(b"part")
            raise OSError(code, os.strerror(code))
    assert caught.value.errno == code and isinstance(caught.value, OSError)
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_one_file_stays_an_os_error(tmp_path):
    with pytest.raises(OSError) as caught:
        atomic.atomic_write_text(tmp_path / ("x" * 300), "name too long")
    assert caught.value.errno == errno.ENAMETOOLONG and not isinstance(caught.value, OutputError)


def test_a_temporary_that_cannot_be_removed_is_an_output_error(tmp_path, monkeypatch):
    (tmp_path / f".x.npz{atomic.TEMP_MARKER}1-0-abcdef").write_bytes(b"half")

    def read_only(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(atomic.os, "unlink", read_only)
    with pytest.raises(OutputError, match=r"Read-only file system \(EROFS\)"):
        atomic.remove_stale_temporaries(tmp_path)
