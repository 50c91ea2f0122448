"""Rebuild the shipped ``default`` compressor bundle from scratch (``make train-default``).

One DiffRes importance estimator is trained on the three benchmark tasks together (keywords,
pitch, drums; ``make data`` builds them), with one classifier per task, at hops 2.5, 5 and 10 ms
drawn per clip and reductions 0.5 and 0.75 drawn per batch, from seed 0 on one CPU thread
(the setting the shipped weights were made with: other thread counts can change the last bits
of a convolution and so the weights). The bundle (``weights.safetensors`` + ``config.json``) is
copied to ``adares/pretrained/default/``.

    python adares/pretrained/make_default.py [--data DIR] [--work DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("keywords", "pitch", "drums")
HOPS = ("2.5ms", "5ms", "10ms")
REDUCTIONS = (0.5, 0.75)
DESCRIPTION = (
    "DiffRes importance estimator (residual 1-D CNN, channels 128-32-16-8-4-1, kernel 5, each clip's "
    "log-mel standardised to zero mean and unit variance at its input) trained jointly "
    "on the adares benchmark tasks keywords, pitch and drums (one classifier per task), at hops 2.5, 5 and "
    "10 ms and reductions {reductions}. It reads its own analysis of the audio (16 kHz, 128 mels, 25 ms "
    "window, at your hop) and its scores merge your front end's linear mel power, whatever its mel count."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "generated")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "cache" / "default-train")
    parser.add_argument("--out", type=Path, default=ROOT / "adares" / "pretrained" / "default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the trainer's default")
    parser.add_argument("--restart", action="store_true", help="ignore a checkpoint in --work")
    parser.add_argument(
        "--reductions",
        default=",".join(f"{r:g}" for r in REDUCTIONS),
        help="comma-separated reductions drawn per batch (the shipped bundle's: %(default)s)",
    )
    parser.add_argument(
        "--flux-base",
        action="store_true",
        help="train an estimator that starts at the flux and learns a correction (a candidate, not the shipped one)",
    )
    parser.add_argument(
        "--planes",
        default="auto",
        choices=("auto", "avg", "stack", "mix"),
        help="what the classifiers read while training (avg: the averaged plane, what `adares extract` writes)",
    )
    parser.add_argument("--compressor-lr", type=float, default=None, help="estimator's peak learning rate")
    args = parser.parse_args(argv)

    from adares.train import DEFAULT_ESTIMATOR_CHANNELS, TrainConfig, load_spectrograms, train_multitask

    try:
        reductions = tuple(float(r) for r in args.reductions.split(",") if r.strip())
    except ValueError:
        parser.error(f"--reductions must be comma-separated numbers, got {args.reductions!r}")
    if not reductions or not all(0.0 <= r < 1.0 for r in reductions):
        parser.error(f"--reductions must lie in [0, 1), got {args.reductions!r}")
    missing = [task for task in TASKS if not (args.data / task / "labels.csv").is_file()]
    if missing:
        parser.error(f"missing datasets {', '.join(missing)} under {args.data}: run `make data` first")
    # min_epochs 12: the shipped bundle's setting (its run went the full 25 epochs and kept the last).
    # Standardised estimator input: fed the raw ln-mel (mean near -8), the first block's ReLUs die
    # and the estimator collapses to a near-constant score (benchmarks/RESULTS.md, accuracy notes).
    settings = {
        "compressor": "diffres",
        "reduction": reductions[0],
        "seed": args.seed,
        "min_epochs": 12,
        "planes": args.planes,
        "compressor_lr": args.compressor_lr,
        "estimator": {"channels": list(DEFAULT_ESTIMATOR_CHANNELS), "standardize": True}
        | ({"flux_base": True} if args.flux_base else {}),
    }
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    config = TrainConfig(**settings)
    began = time.perf_counter()
    datasets = {
        task: {
            hop: load_spectrograms(
                args.data / task,
                frontend=TrainConfig(**{**settings, "hop": hop}).frontend_config(),
                cache_dir=ROOT / "benchmarks" / "cache",
                progress=True,
            )
            for hop in HOPS
        }
        for task in TASKS
    }
    print(f"log-mels ready in {time.perf_counter() - began:.0f} s", flush=True)
    metrics = train_multitask(
        datasets,
        args.work,
        config,
        reductions=reductions,
        bundle_name="default",
        bundle_description=DESCRIPTION.format(reductions=" and ".join(f"{r:g}" for r in reductions)),
        resume=not args.restart,
        threads=args.threads,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("weights.safetensors", "config.json"):
        shutil.copyfile(args.work / "compressor" / name, args.out / name)
    print(json.dumps({"bundle": metrics["bundle"], "test": metrics["test"]}, indent=1))
    print(f"wrote {args.out} in {(time.perf_counter() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
