"""Benchmark: MelFrontend against librosa and plain torch, on the CPU.

Two workloads at 16 kHz, 5 ms hop, 25 ms window, n_fft 512, 128 slaney mel bands:

* ``long``: one 60 s signal (12,001 frames);
* ``batch``: 64 one-second clips as one [64, 16000] batch (201 frames each).

Contenders compute the same linear mel power (checked before timing):

* ``adares``: ``MelFrontend.power`` (and, for information, ``MelFrontend.forward`` with ln);
* ``librosa``: ``librosa.feature.melspectrogram`` (one batched call on the [64, N] array for the
  batch workload, librosa's own multichannel path);
* ``torch``: ``torch.stft`` + ``abs() ** 2`` + a dense matmul with librosa's filterbank.

Each contender is timed in its own block after warm-up (see ``_timing.py``); the table shows
medians and adares' speed-up over each. Run as ``.venv/bin/python benchmarks/bench_frontend.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median, time_block  # noqa: E402

from adares.frontend import MelFrontend  # noqa: E402

SR = 16000
HOP = 80
WIN = 400
N_FFT = 512
N_MELS = 128


def _signal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = shape[-1]
    t = np.arange(n) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + (7000 - 100) * t**2 / (2 * t[-1])))
    return (0.05 * rng.standard_normal(shape) + chirp).astype(np.float32)


def _contenders(y: np.ndarray) -> dict[str, object]:
    frontend = MelFrontend(sr=SR, hop=HOP, win=WIN, n_fft=N_FFT, n_mels=N_MELS)
    x = torch.from_numpy(y)
    fbank = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS).T.copy())
    window = torch.hann_window(WIN)

    def adares_power():
        return frontend.power(x)[0]

    def adares_forward():
        return frontend(x)[0]

    def librosa_power():
        return librosa.feature.melspectrogram(
            y=y,
            sr=SR,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=WIN,
            window="hann",
            center=True,
            pad_mode="constant",
            power=2.0,
            n_mels=N_MELS,
        )

    def torch_power():
        spec = torch.stft(
            x,
            N_FFT,
            hop_length=HOP,
            win_length=WIN,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return (spec.abs() ** 2).transpose(-1, -2) @ fbank

    return {
        "adares": adares_power,
        "librosa": librosa_power,
        "torch": torch_power,
        "adares_forward_ln": adares_forward,
    }


def _check_agreement(fns: dict[str, object]) -> float:
    """Largest relative difference of adares' power from librosa's; the timings compare equals."""
    ours = fns["adares"]().numpy()
    theirs = np.swapaxes(fns["librosa"](), -1, -2).reshape(ours.shape)
    plain = fns["torch"]().numpy().reshape(ours.shape)
    scale = theirs.max()
    worst = float(np.max(np.abs(ours - theirs) / (np.abs(theirs) + 1e-6 * scale)))
    worst_plain = float(np.max(np.abs(plain - theirs) / (np.abs(theirs) + 1e-6 * scale)))
    if worst > 1e-4 or worst_plain > 1e-4:
        raise SystemExit(f"contenders disagree: adares {worst:.2e}, torch {worst_plain:.2e} (relative)")
    return worst


def run(*, quick: bool, repeats: int) -> dict[str, object]:
    workloads = {
        "long_60s": _signal((SR * (10 if quick else 60),)),
        "batch_64x1s": _signal((16 if quick else 64, SR)),
    }
    results: dict[str, object] = {}
    with torch.inference_mode():
        for name, y in workloads.items():
            fns = _contenders(y)
            worst = _check_agreement(fns)
            medians, runs = {}, {}
            for contender, fn in fns.items():
                runs[contender] = time_block(fn, repeats=repeats, warmup=2)
                medians[contender] = median(runs[contender])
            results[name] = {
                "shape": list(y.shape),
                "frames_per_item": 1 + y.shape[-1] // HOP,
                "median_seconds": medians,
                "speedup_vs_librosa": medians["librosa"] / medians["adares"],
                "speedup_vs_torch": medians["torch"] / medians["adares"],
                "max_relative_difference_vs_librosa": worst,
                "run_seconds": runs,
            }
    return results


def _print_table(results: dict[str, object]) -> None:
    print(f"{'workload':<14}{'contender':<20}{'median ms':>11}")
    for name, result in results.items():
        for contender, seconds in result["median_seconds"].items():
            print(f"{name:<14}{contender:<20}{seconds * 1e3:>11.2f}")
        print(
            f"{'':<14}adares speed-up: {result['speedup_vs_librosa']:.2f}x vs librosa, "
            f"{result['speedup_vs_torch']:.2f}x vs plain torch"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s signal and 16 clips, 3 repeats (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per contender (default 9)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "frontend.json",
        help="where to write the results",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Timings on a shared machine mean little without the load they ran under: with more
    # runnable threads than cores, every multi-threaded torch op waits for its second thread.
    load_before = list(os.getloadavg())
    results = run(quick=args.quick, repeats=repeats)
    _print_table(results)
    load_after = os.getloadavg()[0]
    print(f"torch threads {torch.get_num_threads()}, load average {load_before[0]:.2f} before, {load_after:.2f} after")
    report = {
        "benchmark": "frontend",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "repeats": repeats,
        "settings": {"sr": SR, "hop_samples": HOP, "win_samples": WIN, "n_fft": N_FFT, "n_mels": N_MELS},
        "librosa_batch_mode": "one batched melspectrogram call on the [B, N] array",
        "compared_quantity": "linear mel power; adares_forward_ln adds ln(P + 1e-6) and is not in the ratios",
        "load_average_before": load_before,
        "environment": environment(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    if not args.quick:
        from _report import update_section

        update_section("frontend", markdown(report))
        print("updated benchmarks/RESULTS.md")
    return 0


def markdown(report: dict[str, object]) -> str:
    """The RESULTS.md section: medians per contender and adares' ratios, measured in one process."""
    from _report import stamp

    labels = {"long_60s": "one 60 s signal", "batch_64x1s": "batch of 64 x 1 s clips"}
    lines = [
        "## Front end: MelFrontend against librosa and plain torch",
        "",
        stamp(),
        "",
        f"Linear mel power at 16 kHz, hop {HOP} samples (5 ms), window {WIN}, n_fft {N_FFT}, {N_MELS} slaney "
        f"mels; every contender checked equal to librosa (relative 1e-4) before timing; each timed in its own "
        f"block after a warm-up, median of {report['repeats']} runs; torch threads "
        f"{report['environment'].get('torch_threads', '?')}, load average before "
        f"{report['load_average_before'][0]:.2f}. Plain torch is `torch.stft` + `abs()**2` + a dense matmul "
        "with librosa's filterbank.",
        "",
        "| workload | adares ms | librosa ms | plain torch ms | vs librosa | vs plain torch |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in report["results"].items():
        med = result["median_seconds"]
        lines.append(
            f"| {labels.get(name, name)} | {med['adares'] * 1e3:.1f} | {med['librosa'] * 1e3:.1f} | "
            f"{med['torch'] * 1e3:.1f} | {result['speedup_vs_librosa']:.2f}x | {result['speedup_vs_torch']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
