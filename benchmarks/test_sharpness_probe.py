"""The sharpness probes: the shipped default's weights with the flux raised to a set power."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sharpness_probe  # noqa: E402

from adares.compressor import Compressor  # noqa: E402
from adares.diffres import ImportanceEstimator  # noqa: E402
from adares.functional.importance import spectral_flux  # noqa: E402


def test_the_probes_raise_the_flux_and_keep_the_correction(tmp_path):
    sharpness_probe.main(["--powers", "1,0.5", "--out", str(tmp_path)])
    shipped = Compressor.load(sharpness_probe.SHIPPED).estimator
    torch.manual_seed(0)
    log_mel = torch.randn(2, 120, shipped.n_mels) * 3.0 - 8.0
    flux = spectral_flux(log_mel)
    with torch.no_grad():
        # the plain probes: the flux and its square root, nothing learned
        torch.testing.assert_close(Compressor.load(tmp_path / "flux-p1").estimator(log_mel), flux)
        torch.testing.assert_close(Compressor.load(tmp_path / "flux-p0.5").estimator(log_mel), flux.sqrt())
        # the shipped correction on the flux at power 1 is the shipped default itself
        torch.testing.assert_close(Compressor.load(tmp_path / "default-p1").estimator(log_mel), shipped(log_mel))
        # at power 0.5 the correction is the same factor on the flattened flux
        correction = shipped(log_mel) / flux
        torch.testing.assert_close(
            Compressor.load(tmp_path / "default-p0.5").estimator(log_mel), flux.sqrt() * correction, rtol=1e-5, atol=0
        )


def test_a_power_needs_a_flux_based_estimator_and_a_positive_value():
    with pytest.raises(ValueError, match="flux-based"):
        sharpness_probe.with_power(ImportanceEstimator(8, channels=[4, 1]), 0.5)
    with pytest.raises(ValueError, match="positive"):
        sharpness_probe.with_power(ImportanceEstimator(8, channels=[4, 1], flux_base=True), 0.0)
