"""Corpus extraction speed: ``adares extract`` against the loop a user would write.

The anchor is the obvious loop (``librosa.load`` + ``librosa.feature.melspectrogram`` + ``np.save``
per file, one process). Both sides run as whole processes (imports and start-up included), each in
its own block of repeats, on the same files; the report gives medians and the ratio in files per
second (short clips) and real-time factor (long files).

Corpora: 3,000 one-second clips and four 10-minute files, made from real recordings (the
benchmark datasets of ``make data`` when present, otherwise the demo audio), written to a temporary
folder once per run.

    python benchmarks/bench_extract.py            # full
    python benchmarks/bench_extract.py --quick    # 300 clips, two 2-minute files, fewer repeats
    python benchmarks/bench_extract.py --models default --devices cpu,cuda --rounds 1   # on a GPU machine

Only the full run with the default corpus, rounds, jobs and devices updates RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import stamp, update_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SR = 16000

NAIVE_LOOP = r"""
import sys, pathlib, numpy as np, librosa
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for path in sorted(p for p in src.rglob("*") if p.suffix in (".wav", ".flac")):
    y, sr = librosa.load(path, sr=16000)
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=80, win_length=400, n_mels=128,
                                       center=True, pad_mode="constant")
    out = dst / path.relative_to(src).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.log(S + 1e-6).T.astype(np.float32))
"""


def source_recordings(limit_seconds: float) -> np.ndarray:
    """Real audio to cut clips from: the generated datasets, else the demo clips; 16 kHz mono."""
    import adares

    candidates = sorted((ROOT / "benchmarks" / "data" / "generated").rglob("*.flac"))[:4000]
    candidates = candidates or sorted((ROOT / "demo" / "audio").rglob("*.*"))
    if not candidates:
        raise SystemExit("no real audio found: run `make data` or keep demo/audio in place")
    pieces, total = [], 0
    for path in candidates:
        try:
            samples, _ = adares.load(path, sr=SR)
        except adares.AdaresError:
            continue
        pieces.append(samples)
        total += len(samples)
        if total >= limit_seconds * SR:
            break
    audio = np.concatenate(pieces)
    repeats = int(np.ceil(limit_seconds * SR / len(audio)))
    return np.tile(audio, repeats)[: int(limit_seconds * SR)]


def make_corpora(folder: Path, *, clips: int, long_files: int, long_seconds: float) -> tuple[Path, Path]:
    audio = source_recordings(max(clips, 120.0))
    short = folder / "clips"
    for i in range(clips):
        sub = short / f"{i // 500:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        start = (i * 7919) % (len(audio) - SR)
        sf.write(sub / f"clip{i:05d}.wav", audio[start : start + SR], SR, subtype="PCM_16")
    long = folder / "long"
    long.mkdir()
    for i in range(long_files):
        shift = (i * 104729) % len(audio)
        track = np.tile(np.roll(audio, shift), int(np.ceil(long_seconds * SR / len(audio))))[: int(long_seconds * SR)]
        sf.write(long / f"long{i}.flac", track, SR, subtype="PCM_16")
    return short, long


def run_timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return elapsed


def block(name: str, make_command, *, repeats: int, workdir: Path, warm_up: bool, keep: bool) -> list[float]:
    """Run one side ``repeats`` times (fresh output folder each time), after one warm-up run.

    Every run starts after ``os.sync``, so no run pays for writing back another's files. With
    ``keep``, outputs stay until the benchmark ends: deleting thousands of files slows the
    creation of the next thousands for tens of seconds on a disk mounted with ``discard``
    (measured here: 3,000 clips, adares 4.6-5.8 s when the last output was kept, 8.3-8.6 s right
    after deleting it; the naive loop 14.7-15.2 s vs 19.1-19.3 s), which is the benchmark
    measuring its own clean-up rather than the extraction.
    """
    times = []
    for attempt in range(repeats + warm_up):
        out = workdir / f"{name}-{attempt}"
        os.sync()
        seconds = run_timed(make_command(out))
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
        if attempt or not warm_up:  # a warm-up run fills the page cache and compiled bytecode
            times.append(seconds)
    return times


def rounds_of_blocks(
    sides: dict[str, object], *, rounds: int, repeats: int, workdir: Path, keep: bool
) -> dict[str, list[float]]:
    """Seconds of every timed run per side over ``rounds`` rounds of one block per side, in the same order.

    Blocks keep one side's threads from slowing the other; several rounds spread slow drifts of
    this shared machine over both sides instead of one.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(rounds):
        for index, (name, make_command) in enumerate(sides.items()):
            # one warm-up per side: the page cache and bytecode stay warm for the later rounds
            times[name] += block(
                f"round{round_}-side{index}",
                make_command,
                repeats=repeats,
                workdir=workdir,
                warm_up=round_ == 0,
                keep=keep,
            )
    return times


def keep_outputs(folder: Path, *, runs: int, audio_seconds: float) -> bool:
    """Whether the disk holds ``runs`` outputs of ``audio_seconds`` (log-mel at 5 ms, 128 bins, float32)."""
    needed = runs * audio_seconds * 200 * 128 * 4
    free = shutil.disk_usage(folder).free
    if free > 1.5 * needed:
        return True
    print(
        f"only {free / 1e9:.1f} GB free for {needed / 1e9:.1f} GB of outputs: deleting each run's output "
        "after it (slower file creation on some disks, for both sides)"
    )
    return False


def adares_command(source: Path, *extra: str):
    exe = [sys.executable, "-m", "adares.cli", "extract", "--hop", "5ms", "--n-mels", "128", "-q"]
    return lambda out: [*exe, *extra, str(source), str(out)]


def naive_command(source: Path):
    return lambda out: [sys.executable, "-c", NAIVE_LOOP, str(source), str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small corpora, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--models", default="none", help="comma-separated --model values to time (none,flux,default)")
    parser.add_argument("--devices", default="cpu", help="comma-separated --device values to time each model on")
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for adares (default: all cores)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clips", type=int, default=None, help="number of one-second clips")
    parser.add_argument("--dask", action="store_true", help="also time a local Dask cluster (2 workers)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "extract.json")
    args = parser.parse_args()
    clips, long_files, long_seconds = (300, 2, 120.0) if args.quick else (3000, 4, 600.0)
    clips = args.clips or clips
    repeats = args.repeats or (2 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    models = [m for m in args.models.split(",") if m]
    devices = [d for d in args.devices.split(",") if d]
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    # the benchmark of record (RESULTS.md) is the full run with the defaults; anything else is a probe
    of_record = (
        not args.quick and args.clips is None and args.rounds is None and args.jobs is None and devices == ["cpu"]
    )

    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "clips": clips,
        "long_files": long_files,
        "long_seconds": long_seconds,
        "repeats": repeats,
        "rounds": rounds,
        "jobs": args.jobs,
        "rows": [],
    }

    def commands_for(corpus: Path) -> dict:
        commands = {"naive loop (librosa, 1 process)": naive_command(corpus)}
        for model in models:
            for device in devices:
                on = "" if device == "cpu" else f" --device {device}"
                commands[f"adares extract --model {model}{on} (process pool)"] = adares_command(
                    corpus, "--model", model, "--device", device, *jobs
                )
            if args.dask and model == models[0]:
                commands[f"adares extract --model {model} (Dask local cluster, 2 workers)"] = adares_command(
                    corpus, "--model", model, "--dask-workers", "2"
                )
        return commands

    with tempfile.TemporaryDirectory(prefix="adares-bench-") as tmp:
        work = Path(tmp)
        short, long = make_corpora(work, clips=clips, long_files=long_files, long_seconds=long_seconds)
        # every output stays until the end (deleting them slows the next corpus's runs): room for all?
        keep = keep_outputs(
            work,
            runs=len(commands_for(short)) * (rounds * repeats + 1),
            audio_seconds=clips * 1.0 + long_files * long_seconds,
        )
        results["kept_outputs"] = keep
        for index, (corpus_name, corpus, count, audio_seconds) in enumerate(
            (
                (f"{clips} x 1 s clips", short, clips, clips * 1.0),
                (f"{long_files} x {long_seconds / 60:.0f} min files", long, long_files, long_files * long_seconds),
            )
        ):
            outputs = work / f"outputs{index}"
            outputs.mkdir()
            runs = rounds_of_blocks(commands_for(corpus), rounds=rounds, repeats=repeats, workdir=outputs, keep=keep)
            sides = [(name, statistics.median(times)) for name, times in runs.items()]
            naive = sides[0][1]
            print(
                f"\n{corpus_name}: {audio_seconds / 3600:.2f} h of audio, median of {rounds} x {repeats} "
                "whole-process runs"
            )
            print(
                f"{'side':<62} {'seconds':>9} {'runs (min-max)':>15} {'files/s':>9} {'x real time':>12} {'vs naive':>9}"
            )
            for name, seconds in sides:
                row = {
                    "corpus": corpus_name,
                    "side": name,
                    "median_seconds": seconds,
                    "files_per_second": count / seconds,
                    "real_time_factor": audio_seconds / seconds,
                    "speedup_vs_naive": naive / seconds,
                    "runs_seconds": runs[name],
                }
                results["rows"].append(row)
                print(
                    f"{name:<62} {seconds:9.2f} {min(runs[name]):7.2f}-{max(runs[name]):<7.2f} {count / seconds:9.1f} "
                    f"{audio_seconds / seconds:12.0f} "
                    f"{naive / seconds:8.2f}x"
                )
            pool = {r["side"]: r["median_seconds"] for r in results["rows"] if r["corpus"] == corpus_name}
            dask_rows = [k for k in pool if "Dask" in k]
            if dask_rows:
                local_key = next(k for k in pool if "process pool" in k)
                overhead = (pool[dask_rows[0]] - pool[local_key]) / count
                print(
                    f"Dask overhead vs process pool: {pool[dask_rows[0]] / pool[local_key]:.2f}x time, "
                    f"{overhead * 1000:+.1f} ms per file"
                )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    if of_record:
        update_section("extract", markdown(results))
        print("updated benchmarks/RESULTS.md")


def markdown(results: dict) -> str:
    lines = [
        "## Corpus extraction: `adares extract` against the naive librosa loop",
        "",
        stamp(),
        "",
        "Whole processes (start-up and imports included), median of "
        f"{results['rounds']} rounds x {results['repeats']} runs, each side in its own block (one "
        "warm-up run per side first), each run after `sync` into a fresh folder, "
        + (
            "every output kept until the benchmark ends (deleting thousands of files slows the next "
            "thousand creations on this `discard`-mounted disk). "
            if results.get("kept_outputs", True)
            else "each output deleted after its run (not enough disk to keep them). "
        )
        + "The naive loop is `librosa.load` + `librosa.feature.melspectrogram` + `np.save` per file in "
        "one process; adares uses all cores.",
        "",
        "| corpus | side | median s | runs s (min-max) | files/s | x real time | speed-up vs naive |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        runs = row["runs_seconds"]
        lines.append(
            f"| {row['corpus']} | {row['side']} | {row['median_seconds']:.2f} | {min(runs):.2f}-{max(runs):.2f} | "
            f"{row['files_per_second']:.1f} | {row['real_time_factor']:.0f} | {row['speedup_vs_naive']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
