"""Peak memory of `adares extract` on one long recording, for the whole process tree.

Writes a FLAC of ``--hours`` of signal (16 kHz mono, level changing every minute) under
``--work`` unless it is there, runs ``adares extract`` on it for each model and job count, and
samples /proc of the command's process group every 0.1 s: the largest sum of RSS over the tree,
the largest sum of PSS (shared pages counted once, split between the processes sharing them), and
the largest RSS of one process (what ``/usr/bin/time -v`` reports).

    python benchmarks/bench_long.py --hours 4 --work /tmp/adares-long
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import run_sampled  # noqa: E402

SR = 16000


def write_recording(path: Path, *, hours: float) -> None:
    """Minute by minute, so writing it holds one minute in memory."""
    rng = np.random.default_rng(0)
    t = np.arange(60 * SR) / SR
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, format="FLAC", subtype="PCM_16") as handle:
        for minute in range(int(round(hours * 60))):
            level = 0.02 + 0.3 * ((minute * 7) % 11) / 11
            tone = np.sin(2 * np.pi * (200 + 40 * (minute % 13)) * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
            handle.write((level * (0.5 * tone + 0.2 * rng.standard_normal(t.shape))).astype(np.float32))


def measure(command: list[str]) -> dict[str, float]:
    sampled = run_sampled(command)
    if sampled["returncode"]:
        raise SystemExit(f"{' '.join(command)} failed ({sampled['returncode']}):\n{sampled['stderr']}")
    keep = ("tree_rss_mb", "tree_pss_mb", "largest_process_rss_mb", "processes")
    return {"wall_s": round(sampled["wall_s"], 1)} | {key: sampled[key] for key in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/adares-long"))
    parser.add_argument("--models", default="none,flux,default")
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--format", default="npz")
    args = parser.parse_args()
    source = args.work / "in" / f"long-{args.hours:g}h.flac"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        write_recording(source, hours=args.hours)
    adares = [sys.executable, "-m", "adares.cli", "extract"]
    for model in args.models.split(","):
        for jobs in args.jobs.split(","):
            out = args.work / f"out-{model}-j{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            command = [*adares, str(source), str(out), "--model", model, "-j", jobs, "--format", args.format, "-q"]
            result = {"model": model, "jobs": int(jobs), "hours": args.hours, "format": args.format}
            result |= measure(command)
            result["realtime_x"] = round(args.hours * 3600 / result["wall_s"])
            print(json.dumps(result), flush=True)
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
