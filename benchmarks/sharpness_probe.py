"""Bundles that raise the flux to a fixed power, for the screen: does a flatter flux classify better?

A flux-based estimator with a learned sharpness (``ImportanceEstimator(flux_base=True,
learn_sharpness=True)``) scores ``flux^p x exp(gain x CNN)``. Joint training moves ``p`` (the
classifiers of ``make_default.py`` pull it above 1); this script writes bundles with ``p`` set by
hand, untrained, so the screen can say which way the extractor's users gain:

- ``flux-pP``: the plain flux raised to ``P`` (gain 0: nothing learned; ``P = 1`` is ``--model flux``);
- ``default-pP``: the shipped default's learned correction on the flux raised to ``P``.

    python benchmarks/sharpness_probe.py --powers 0.5 --out benchmarks/cache/candidates
    python benchmarks/screen.py --configs benchmarks/cache/candidates/flux-p0.5 --reductions 0.75 --name sharpness

They are probes, not candidates for ``default``: a power chosen on the screen is fitted to it.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from adares.compressor import Compressor, export_bundle
from adares.diffres import ImportanceEstimator

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "adares" / "pretrained" / "default"


def with_power(estimator: ImportanceEstimator, power: float) -> ImportanceEstimator:
    """A copy of flux-based ``estimator`` (same weights) that raises the flux to ``power``.

    Parameters
    ----------
    estimator : ImportanceEstimator
        Flux-based (``flux_base``); its correction and batch-norm statistics are kept.
    power : float
        Positive exponent of the flux's scores.

    Returns
    -------
    ImportanceEstimator
        With ``learn_sharpness`` and ``log_sharpness = ln(power)``, in evaluation mode.
    """
    if not estimator.flux_base:
        raise ValueError("the power applies to a flux-based estimator")
    if not power > 0.0:
        raise ValueError(f"power must be positive, got {power}")
    probe = ImportanceEstimator(
        estimator.n_mels,
        kernel_size=estimator.kernel_size,
        channels=list(estimator.channels),
        standardize=estimator.standardize,
        flux_base=True,
        learn_sharpness=True,
    )
    state = estimator.state_dict() | {"log_sharpness": torch.tensor(math.log(power))}
    probe.load_state_dict(state)
    return probe.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--powers", default="0.5", help="comma-separated powers of the flux [0.5]")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "cache" / "candidates")
    args = parser.parse_args(argv)
    shipped = Compressor.load(SHIPPED)
    # The plain flux: the shipped estimator's shape with the correction switched off (gain 0).
    plain = with_power(shipped.estimator, 1.0)
    with torch.no_grad():
        plain.correction_gain.zero_()
    for power in (float(p) for p in args.powers.split(",") if p.strip()):
        for name, estimator, what in (
            (f"flux-p{power:g}", plain, "the plain spectral flux (no learned correction)"),
            (f"default-p{power:g}", shipped.estimator, "the shipped default's learned correction on the flux"),
        ):
            bundle = export_bundle(
                with_power(estimator, power),
                args.out / name,
                frontend=shipped.frontend_config,
                reduction=shipped.reduction,
                name=name,
                description=f"Probe (benchmarks/sharpness_probe.py): {what}, the flux raised to {power:g}.",
                training={"from": "adares/pretrained/default", "power": power},
                validated=shipped.card.get("validated"),
            )
            print(f"{bundle.card['name']}: {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
