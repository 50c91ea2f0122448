"""Content digests of generated data: the audio decides them, not the FLAC encoder's metadata."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digests  # noqa: E402


def _task(folder: Path, samples: list[np.ndarray], *, title: str = "a") -> None:
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split,group"]
    for index, clip in enumerate(samples):
        path = f"audio/clip-{index}.flac"
        with sf.SoundFile(folder / path, "w", 16000, 1, subtype="PCM_16", format="FLAC") as handle:
            handle.title = title  # metadata in the file's bytes, not in its audio
            handle.write(clip)
        rows.append(f"{path},x,train,g{index}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (folder / "dataset.json").write_text(json.dumps({"tool_versions": {"espeak-ng": "1"}}))


def test_the_digest_follows_the_samples_not_the_file_metadata(tmp_path):
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, 1600) for _ in range(3)]
    _task(tmp_path / "one" / "task", clips, title="first")
    _task(tmp_path / "two" / "task", clips, title="another encoder's tag")
    first = digests.task_digest(tmp_path / "one" / "task")
    assert digests.task_digest(tmp_path / "two" / "task") == first
    changed = [c.copy() for c in clips]
    changed[1][100] += 0.01
    _task(tmp_path / "three" / "task", changed)
    assert digests.task_digest(tmp_path / "three" / "task") != first


def test_the_check_names_a_task_whose_audio_differs(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    _task(tmp_path / "generated" / "drums", [rng.uniform(-0.5, 0.5, 800)])
    monkeypatch.setattr(digests, "RECORD", tmp_path / "digests.json")
    assert digests.main(["--record", str(tmp_path / "generated")]) == 0
    assert digests.main([str(tmp_path / "generated")]) == 0
    assert "generated/drums: same audio" in capsys.readouterr().out
    _task(tmp_path / "generated" / "drums", [rng.uniform(-0.5, 0.5, 800)])
    assert digests.main([str(tmp_path / "generated")]) == 0
    captured = capsys.readouterr()
    assert "generated/drums: OTHER AUDIO" in captured.out and "1 task(s) differ" in captured.err
