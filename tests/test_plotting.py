from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from adares.cli.main import main
from adares.extractor import FineMelExtractor
from adares.features import Features
from adares.frontend import MelFrontend

from .conftest import SR, synth

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")

from adares.plotting import plot  # noqa: E402 - after the backend is chosen


def merged_features() -> Features:
    # three merged frames of very different widths, plus scores on a 5 ms grid
    spans = np.array([[0, 400], [400, 2400], [2400, 8000]])
    return Features(
        mel=np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]),
        spans=spans,
        scores=np.full(101, 3 / 101, np.float32),
        meta={"sr": SR, "hop_samples": 80, "num_samples": 8000, "compressor": "test"},
    )


def test_merged_blocks_line_up_with_spans(tmp_path):
    features = merged_features()
    figure = plot(features, path=tmp_path / "x.png")
    mesh = figure.axes[-1].collections[0]
    x_edges = mesh.get_coordinates()[0, :, 0]
    np.testing.assert_allclose(x_edges, [0.0, 400 / SR, 2400 / SR, 8000 / SR])
    # each block carries its frame's values (mel bins on y)
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(2, 3), features.mel.T)
    image = plt.imread(tmp_path / "x.png")
    assert image.shape[0] > 100 and image[..., :3].std() > 0.05  # drawn, not blank
    plt.close(figure)


def test_full_plot_with_audio(tmp_path):
    samples = synth(1.0)
    frontend = MelFrontend(n_mels=40)
    features = FineMelExtractor(frontend)(samples)
    figure = plot(features, samples=samples, fine_mel=features.mel, path=tmp_path / "full.png")
    assert len(figure.axes) == 3  # waveform, fine, merged (no scores without a compressor)
    assert figure.axes[0].get_xlim() == (0.0, 1.0)
    plt.close(figure)


def test_inspect_audio_and_npz(tmp_path):
    wav = tmp_path / "x.wav"
    sf.write(wav, synth(0.5), SR)
    runner = CliRunner()
    inspect = ["inspect", str(wav), "--n-mels", "40", "--model", "none", "-o", str(tmp_path / "a.png")]
    result = runner.invoke(main, inspect)
    assert result.exit_code == 0, result.output
    assert "101 frames x 40 mels" in result.output and "compression 1.00x (no merging)" in result.output
    assert (tmp_path / "a.png").stat().st_size > 10_000

    out = tmp_path / "out"
    extract = ["extract", str(wav), str(out), "--n-mels", "40", "--model", "none", "-j", "1", "-q"]
    assert runner.invoke(main, extract).exit_code == 0
    result = runner.invoke(main, ["inspect", str(out / "x.npz"), "--audio", str(wav), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    assert "frame span  shortest 2.50 ms" in result.output  # the first centred frame is half a hop
    assert "compressor  none" in result.output


def test_inspect_audio_with_a_capped_merge(tmp_path):
    wav = tmp_path / "x.wav"
    sf.write(wav, synth(0.5), SR)
    flags = ["--n-mels", "40", "--model", "flux", "--reduction", "0.75"]
    capped = CliRunner().invoke(main, ["inspect", str(wav), *flags, "--min-span-exponent", "0.5"])
    assert capped.exit_code == 0, capped.output
    assert "(reduction 0.75, min_span_exponent 0.5)" in capped.output
    uncapped = CliRunner().invoke(main, ["inspect", str(wav), *flags])
    assert "(reduction 0.75)" in uncapped.output

    def shortest_ms(output: str) -> float:
        return float(output.split("frame span  shortest ")[1].split(" ms")[0])

    # Two 5 ms fine frames at least, less where the file's first and last frames are cut short
    # (half a hop each, centred); uncapped, the burst's onset keeps a fine frame to itself.
    assert shortest_ms(capped.output) >= 7.5 > shortest_ms(uncapped.output)


def test_inspect_audio_runs_the_shipped_compressor_by_default(tmp_path):
    wav = tmp_path / "x.wav"
    sf.write(wav, synth(0.5), SR)
    result = CliRunner().invoke(main, ["inspect", str(wav), "--n-mels", "40"])
    assert result.exit_code == 0, result.output
    assert "51 frames x 40 mels" in result.output  # 101 fine frames, half merged away (rounded up)
    assert "compression 1.98x" in result.output and "compressor  default (sha256" in result.output
