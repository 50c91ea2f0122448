"""Benchmark: the O(T) DiffRes merge against a dense implementation of the same math, on the CPU.

Two sides compute the same three planes (averaged log-mel, max log-mel, resolution encoding) from
the same normalised scores, at F = 128 mel bins and ρ = 0.5, batch 1:

* ``adares``: :mod:`adares.functional.merge` (scatter over the 2T non-zeros of the overlap matrix,
  log-domain merges, block-generated position table);
* ``dense``: written here the way the reference implementation (pydiffres) works: the overlap
  matrix ``W`` built densely as ``[B, T, T']`` from the cumulative scores, ``exp`` of the log-mel,
  ``W^T·exp(x)`` and ``W^T·PE`` by matrix products, and the max merge by the reference's odd/even
  trick (each fine frame overlaps one even and one odd output frame; two scatter-max calls), with
  a fixed ``[T, F]`` position table. It needs no ``torch_scatter``: ``scatter_reduce`` does the
  same job.

Both sides share :func:`adares.functional.merge.normalize_scores` (the exact capped
normalisation; cheap next to the merge) and their planes are checked to agree before timing.

Workloads, each forward + backward (gradient to the raw scores, as in training):

* ``merge``: raw scores -> normalisation -> the three planes, ``T`` = 1,000 / 3,000 / 12,000
  (and 48,000 for adares alone: the dense ``W`` would take 4.6 GB per copy);
* ``module``: the whole DiffRes module in training mode (importance estimator, merge, guide loss),
  with the dense merge swapped in on the dense side; the estimator costs the same on both sides.

And forward alone, in inference mode, for one hour at a 5 ms hop (720,000 x 128 frames): DiffRes
and the training-free flux compressor.

Peak memory is the peak resident set size of a fresh subprocess per measurement (``ru_maxrss``),
minus the resident size just before the measured call (inputs and model already built), so torch's
own footprint and the input are not charged to either side; the hour-long run also reports the
process's absolute peak. Times: each side in its own block after warm-up (``_timing.py``),
medians. Run as ``.venv/bin/python benchmarks/bench_diffres.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median, time_block  # noqa: E402

from adares.diffres import DiffRes, FluxCompressor, guide_loss  # noqa: E402
from adares.functional.merge import diffres_planes, normalize_scores, output_lengths, positional_table  # noqa: E402

N_MELS = 128
REDUCTION = 0.5
HOUR_FRAMES = 720_000
EPS = 1e-12


# --------------------------------------------------------------------------------------------
# the dense side


def dense_planes(log_mel: torch.Tensor, scores: torch.Tensor, out: int) -> torch.Tensor:
    """The three planes ``[B, 3, T', F]`` with a dense ``[B, T, T']`` overlap matrix."""
    batch, frames, mels = log_mel.shape
    end = torch.cumsum(scores, 1)[:, :, None]  # [B, T, 1]
    start = end - scores[:, :, None]
    j = torch.arange(out, dtype=scores.dtype)[None, None, :]
    weight = torch.clamp(torch.minimum(end, j + 1) - torch.maximum(start, j), min=0.0)  # [B, T, T']
    power = log_mel.exp()
    average = torch.log(weight.transpose(1, 2) @ power + EPS)
    table = positional_table(frames, mels, dtype=log_mel.dtype)
    resolution = weight.transpose(1, 2) @ table
    maximum = _odd_even_max(weight, power, out) * (frames / out)
    return torch.stack([average, torch.log(maximum + EPS), resolution], dim=1)


def _odd_even_max(weight: torch.Tensor, power: torch.Tensor, out: int) -> torch.Tensor:
    """Max merge as the reference does it: one scatter-max over the even and one over the odd columns."""
    batch, frames, mels = power.shape
    result = power.new_zeros(batch, out, mels)
    for parity in (0, 1):
        columns = torch.arange(parity, out, 2)
        part = weight[:, :, columns]  # [B, T, T'/2]: a fine frame overlaps at most one such column
        share = part.sum(-1)  # [B, T]
        slot = part.argmax(-1)  # [B, T], local column index
        values = torch.where(share[:, :, None] > 0, share[:, :, None] * power, 0.0)
        merged = power.new_zeros(batch, len(columns), mels).scatter_reduce(
            1, slot[:, :, None].expand(-1, -1, mels), values, reduce="amax", include_self=False
        )
        result = result.index_copy(1, columns, merged)
    return result


def adares_planes(log_mel: torch.Tensor, scores: torch.Tensor, out: int) -> torch.Tensor:
    return diffres_planes(log_mel, scores, out, eps=EPS)


class DenseDiffRes(torch.nn.Module):
    """DiffRes with the dense merge, sharing another module's estimator (same weights, same cost)."""

    def __init__(self, estimator: torch.nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = log_mel.shape[1]
        out = int(output_lengths(torch.tensor([frames]), reduction=REDUCTION)[0])
        scores = normalize_scores(self.estimator(log_mel), out)
        loss, _ = guide_loss(log_mel, scores, reduction=REDUCTION)
        return dense_planes(log_mel, scores, out), loss


# --------------------------------------------------------------------------------------------
# workloads


def _inputs(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    gen = torch.Generator().manual_seed(seed)
    log_mel = torch.randn(1, frames, N_MELS, generator=gen) * 2.0 - 6.0
    raw = torch.rand(1, frames, generator=gen) * 0.9 + 0.05
    out = int(output_lengths(torch.tensor([frames]), reduction=REDUCTION)[0])
    return log_mel, raw, out


def make_step(workload: str, side: str, frames: int):
    """A no-argument function running one forward + backward, and the planes it computes."""
    log_mel, raw, out = _inputs(frames)
    if workload == "merge":
        planes = {"adares": adares_planes, "dense": dense_planes}[side]
        leaf = raw.clone().requires_grad_()

        def step():
            leaf.grad = None
            result = planes(log_mel, normalize_scores(leaf, out), out)
            result.sum().backward()
            return result.detach()

        return step
    torch.manual_seed(0)
    module = DiffRes(N_MELS, reduction=REDUCTION).train()
    dense = DenseDiffRes(module.estimator).train()

    def step():
        module.zero_grad(set_to_none=True)
        if side == "adares":
            result = module(log_mel)
            feature, loss = result.feature, result.guide_loss
        else:
            feature, loss = dense(log_mel)
        (feature.sum() + loss).backward()
        return feature.detach()

    return step


def _agreement(frames: int) -> float:
    """Largest absolute difference between the two sides' planes, both computed in float64.

    In float32 the dense side drifts: its cumulative sum of 3,000 scores is already off by about
    1e-4 frames, enough to move a small overlap weight by a few percent.
    """
    log_mel, raw, out = _inputs(frames)
    scores = normalize_scores(raw.double(), out)
    a = adares_planes(log_mel.double(), scores, out)
    b = dense_planes(log_mel.double(), scores, out)
    return float((a - b).abs().max())


def _calibrate(module: torch.nn.Module, log_mel: torch.Tensor) -> None:
    """Batch-norm statistics of one clip, then evaluation mode: an untrained estimator with fresh
    statistics has mostly dead ReLUs in evaluation and would give constant scores."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for norm in norms:
        norm.momentum = 1.0
    module.train()
    with torch.no_grad():
        module(log_mel)
    module.eval()


def _status_gb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so a warm-up's peak is not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_memory(workload: str, side: str, frames: int) -> dict[str, float]:
    """Peak RSS of one call in this (fresh) process, in GB.

    Forward + backward workloads: the same call runs once first (code pages of torch touched for
    the first time and lazily created thread pools would otherwise be charged to the side, tens
    to hundreds of MB), then the peak of the second call over the RSS just before it.

    The hour-long forward: two calls from a fresh process; the peak of each over the RSS of the
    process once imported (so the 368 MB input counts) and over the RSS with the input loaded.
    """
    if workload == "hour":
        imported = _status_gb("VmRSS")
        log_mel = torch.randn(1, frames, N_MELS, generator=torch.Generator().manual_seed(0)) * 2.0 - 6.0
        torch.manual_seed(0)
        module = (DiffRes if side == "diffres" else FluxCompressor)(N_MELS, reduction=REDUCTION)
        _calibrate(module, log_mel[:, :4000])
        gc.collect()
        loaded = _status_gb("VmRSS")
        calls = []
        for _ in range(2):
            _reset_peak()
            start = time.perf_counter()
            with torch.inference_mode():
                result = module(log_mel)
            seconds = time.perf_counter() - start
            peak = _status_gb("VmHWM")  # before the check below, whose temporaries are not the call's
            finite = bool(torch.isfinite(result.feature).all())
            rows = int(result.lengths[0])
            del result
            gc.collect()
            calls.append({"seconds": seconds, "process_peak_gb": peak, "finite": finite, "rows": rows})
        worst = max(call["process_peak_gb"] for call in calls)
        return {
            "imported_gb": imported,
            "loaded_gb": loaded,
            "peak_over_imported_gb": worst - imported,
            "peak_gb": worst - loaded,
            "process_peak_gb": worst,
            "seconds": calls[0]["seconds"],
            "calls": calls,
        }

    step = make_step(workload, side, frames)
    step()
    gc.collect()
    reset = _reset_peak()
    before = _status_gb("VmRSS")
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    peak = _status_gb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {"peak_gb": peak - before, "process_peak_gb": peak, "seconds": seconds, "peak_reset": reset}


def memory_in_subprocess(workload: str, side: str, frames: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--threads", str(torch.get_num_threads()), "--measure-memory", workload, side]
    command.append(str(frames))
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# driver


def run(*, quick: bool) -> dict[str, object]:
    sizes = [1_000, 3_000] if quick else [1_000, 3_000, 12_000]
    adares_only = [] if quick else [48_000]
    rows = []
    for workload in ("merge", "module"):
        for frames in sizes + adares_only:
            sides = ("adares",) if frames in adares_only else ("adares", "dense")
            row: dict[str, object] = {"workload": workload, "frames": frames}
            if "dense" in sides and workload == "merge":
                row["max_abs_difference_float64"] = _agreement(frames)
            for side in sides:
                heavy = side == "dense" and frames >= 12_000
                repeats = 2 if heavy else (3 if quick else 7)
                times = time_block(make_step(workload, side, frames), repeats=repeats, warmup=1)
                row[f"{side}_median_s"] = median(times)
                row[f"{side}_times_s"] = times
                row[f"{side}_peak_gb"] = memory_in_subprocess(workload, side, frames)["peak_gb"]
            if "dense" in sides:
                row["speedup"] = row["dense_median_s"] / row["adares_median_s"]
                row["memory_ratio"] = row["dense_peak_gb"] / max(row["adares_peak_gb"], 1e-6)
            rows.append(row)
            _print_row(row)
    hour_frames = HOUR_FRAMES // 10 if quick else HOUR_FRAMES
    hour = {side: memory_in_subprocess("hour", side, hour_frames) for side in ("diffres", "flux")}
    for side, result in hour.items():
        print(
            f"forward only, {hour_frames:,} x {N_MELS} ({side}): {result['seconds']:.2f} s, peak "
            f"{result['peak_over_imported_gb']:.2f} GB over the imported process (input included), "
            f"{result['peak_gb']:.2f} GB over the loaded input, whole process {result['process_peak_gb']:.2f} GB"
        )
    return {"rows": rows, "hour": {"frames": hour_frames, **hour}}


def _print_row(row: dict[str, object]) -> None:
    if "dense_median_s" in row:
        print(
            f"{row['workload']:<7} T={row['frames']:>6,}  adares {row['adares_median_s'] * 1e3:9.1f} ms "
            f"{row['adares_peak_gb']:6.3f} GB | dense {row['dense_median_s'] * 1e3:9.1f} ms "
            f"{row['dense_peak_gb']:6.3f} GB | {row['speedup']:6.1f}x faster, {row['memory_ratio']:5.1f}x less memory "
            + (
                f"(float64 planes differ by {row['max_abs_difference_float64']:.1e})"
                if "max_abs_difference_float64" in row
                else ""
            )
        )
    else:
        print(
            f"{row['workload']:<7} T={row['frames']:>6,}  adares {row['adares_median_s'] * 1e3:9.1f} ms "
            f"{row['adares_peak_gb']:6.3f} GB | dense not run"
        )


def markdown(report: dict) -> str:
    from _report import stamp

    lines = [
        "## DiffRes merge: O(T) scatter against the dense overlap matrix",
        "",
        stamp(),
        "",
        f"Forward + backward to the raw scores, batch 1, F = {N_MELS}, ρ = {REDUCTION}, "
        f"{report['settings']['torch_threads']} torch thread(s); medians "
        "(2 runs for the dense side at T = 12,000). `merge`: scores -> normalisation -> the three planes; "
        "`module`: the whole DiffRes in training mode (the estimator is shared, so it costs the same on "
        "both sides). Peak memory: peak RSS of a fresh process over its RSS before the call.",
        "",
        "| workload | T | adares ms | dense ms | speed-up | adares peak GB | adares kB/frame | dense peak GB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["results"]["rows"]:
        dense_ms = f"{row['dense_median_s'] * 1e3:.1f}" if "dense_median_s" in row else "not run"
        speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        dense_gb = f"{row['dense_peak_gb']:.3f}" if "dense_peak_gb" in row else "-"
        lines.append(
            f"| {row['workload']} | {row['frames']:,} | {row['adares_median_s'] * 1e3:.1f} | {dense_ms} | "
            f"{speedup} | {row['adares_peak_gb']:.3f} | {row['adares_peak_gb'] * 1e6 / row['frames']:.1f} | "
            f"{dense_gb} |"
        )
    hour = report["results"]["hour"]
    lines += [
        "",
        f"One hour at 5 ms ({hour['frames']:,} x {N_MELS}), forward only, inference mode, one call (the "
        "peak is the larger of two calls in a fresh process):",
        "",
    ]
    for side in ("diffres", "flux"):
        result = hour[side]
        lines.append(
            f"- {side}: {result['seconds']:.1f} s; peak {result['peak_over_imported_gb']:.2f} GB over the "
            f"imported process (the 0.37 GB input included), {result['peak_gb']:.2f} GB over the loaded "
            f"input, {result['process_peak_gb']:.2f} GB for the whole process."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 1,000 and 3,000 only, 72,000 frames for the hour")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "diffres.json",
        help="where to write the results",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--measure-memory", nargs=3, metavar=("WORKLOAD", "SIDE", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_memory:
        workload, side, frames = args.measure_memory
        print(json.dumps(measure_memory(workload, side, int(frames))))
        return 0

    results = run(quick=args.quick)
    report = {
        "benchmark": "diffres",
        "quick": args.quick,
        "settings": {
            "n_mels": N_MELS,
            "reduction": REDUCTION,
            "batch": 1,
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "memory": "peak RSS of a fresh subprocess minus its RSS just before the measured call (GB)",
        "environment": environment(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    if not args.quick:
        from _report import update_section

        update_section("diffres", markdown(report))
        print("updated benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
