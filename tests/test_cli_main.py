"""The ``adares`` group: how library errors become one line and an exit status."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from adares.cli.main import exit_status, main
from adares.errors import (
    AdaresError,
    AudioDecodeError,
    ConfigMismatchError,
    FeatureFileError,
    ModelError,
    ParameterError,
)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ParameterError("bad hop"), 2),
        (ConfigMismatchError("another configuration"), 2),
        (ModelError("no such bundle"), 2),
        (AudioDecodeError("a.wav", "not an audio file"), 1),
        (FeatureFileError("a.npz: not an adares feature file"), 1),
        (AdaresError("anything else"), 1),
    ],
)
def test_only_usage_errors_exit_2(error, status):
    assert exit_status(error) == status


def test_an_unreadable_feature_file_exits_1_with_one_line(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip file")
    result = run("inspect", str(path))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Error: ") and str(path) in result.stderr


def test_an_unreadable_audio_file_exits_1(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    result = run("inspect", str(path), "--model", "flux")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "x.wav" in result.stderr


def test_an_unknown_model_is_a_usage_error(tmp_path):
    result = run("models", str(tmp_path / "no-such-bundle"))
    assert result.exit_code == 2
    assert "no such compressor bundle" in result.stderr


def test_a_bad_setting_is_a_usage_error(tmp_path):
    path = tmp_path / "x.wav"
    soundfile.write(path, np.zeros(1600, dtype=np.float32), 16000)
    result = run("inspect", str(path), "--hop", "7.3ms")
    assert result.exit_code == 2
    assert "hop" in result.stderr
