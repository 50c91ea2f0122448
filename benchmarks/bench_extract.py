"""Corpus extraction speed at sizes where start-up is a small part: ``adares extract`` against the naive loop.

The anchor is the obvious loop (``librosa.load`` + ``librosa.feature.melspectrogram`` + ``np.save``
per file, one process). Both sides run as whole processes (imports and start-up included), each in
its own block of repeats, on the same files; every run's process tree is sampled from /proc for
its peak memory (PSS summed over the tree) and its CPU time (user and system, from
``RUSAGE_CHILDREN``). The report gives medians and min-max per side, the ratio to the naive loop in
files per second (short clips) and real-time factor (long files), and whether the targets of
issue 16 are met.

A per-file CPU breakdown follows: the library's own stages (``adares.audio.load``, the front end
through ``batch_power``/``fine_power``, the importance's ``score_batch``/``score``, ``compress``
with the spans and the log, the writer) timed in this process, one torch thread as in a worker,
on a sample of the clips and on an excerpt of a long file, user and system time apart.

Corpora (generated once, cached under ``benchmarks/cache/extract``): ``--clips`` one-second clips
and ``--long-files`` files of ``--hours`` each, cut from real recordings (the benchmark datasets
of ``make data`` when present, otherwise the demo audio).

    python benchmarks/bench_extract.py                  # of record: 20,000 clips, four 1-hour files
    python benchmarks/bench_extract.py --quick          # 1,000 clips, two 12-minute files
    python benchmarks/bench_extract.py --clips 2000 --hours 0.25 --models default --formats shards

RESULTS.md is updated by a run with at least the sizes of record (or with ``--record``, which
labels the section as a smaller run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import commit, stamp, update_section  # noqa: E402
from _timing import run_sampled  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache" / "extract"
SR = 16000
RECORD = {"clips": 20000, "hours": 1.0, "long_files": 4}
TARGETS = {"shards": 5.0, "npz": 4.0, "real_time": 1000.0}
"""Issue 16: the default compressor against the naive loop on the clips, and real time on the long files."""

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


def clip_corpus(clips: int) -> Path:
    """``clips`` one-second WAVs in folders of 500 (cached; made once)."""
    folder = CACHE / f"clips-{clips}"
    if (folder / "complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    audio = source_recordings(max(clips, 120.0))
    for i in range(clips):
        sub = folder / "audio" / f"{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        start = (i * 7919) % (len(audio) - SR)
        sf.write(sub / f"clip{i:06d}.wav", audio[start : start + SR], SR, subtype="PCM_16")
    (folder / "complete").write_text("")
    return folder


def long_corpus(files: int, hours: float) -> Path:
    """``files`` FLACs of ``hours`` each, written a minute at a time (cached; made once)."""
    folder = CACHE / f"long-{files}x{hours:g}h"
    if (folder / "complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "audio").mkdir(parents=True)
    audio = source_recordings(600.0)
    minute = 60 * SR
    for i in range(files):
        with sf.SoundFile(
            folder / "audio" / f"long{i}.flac", "w", samplerate=SR, channels=1, format="FLAC", subtype="PCM_16"
        ) as handle:
            for m in range(int(round(hours * 60))):
                start = (i * 104729 + m * 7 * minute) % (len(audio) - minute)
                handle.write(audio[start : start + minute])
    (folder / "complete").write_text("")
    return folder


def read_all(folder: Path) -> None:
    """Read every file once, so each side finds the corpus in the page cache."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 22):
                    pass


def run_once(command: list[str], *, interval: float) -> dict:
    os.sync()  # no run pays for writing back another's files
    sampled = run_sampled(command, interval=interval)
    if sampled["returncode"] != 0:
        raise SystemExit(f"command failed ({sampled['returncode']}): {' '.join(command)}\n{sampled['stderr'][-2000:]}")
    del sampled["stderr"], sampled["returncode"]
    sampled["load_1min_after"] = os.getloadavg()[0]  # the machine is shared: how busy it was
    return sampled


def rounds_of_blocks(
    sides: dict[str, Callable[[Path, Path], list[str]]],
    *,
    corpus: Path,
    warm_corpus: Path,
    rounds: int,
    repeats: int,
    workdir: Path,
    keep: bool,
    interval: float,
) -> dict[str, list[dict]]:
    """Every timed run per side over ``rounds`` rounds of one block per side, in the same order.

    Blocks keep one side's threads from slowing the other; several rounds spread slow drifts of
    this shared machine over both sides instead of one. Before its first block a side runs once
    on ``warm_corpus`` (compiled bytecode, shared libraries in the page cache), untimed. With
    ``keep``, outputs stay until the benchmark ends: deleting thousands of files slows the creation
    of the next thousands on a disk mounted with ``discard``, which would be the benchmark
    measuring its own clean-up.
    """
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(rounds):
        for index, (name, command) in enumerate(sides.items()):
            if round_ == 0:
                warm_out = workdir / f"warm-{index}"
                run_once(command(warm_corpus, warm_out), interval=interval)
                shutil.rmtree(warm_out, ignore_errors=True)
            for attempt in range(repeats):
                out = workdir / f"round{round_}-side{index}-{attempt}"
                run = run_once(command(corpus, out), interval=interval)
                print(f"  {name}: {run['wall_s']:.2f} s, tree PSS {run['tree_pss_mb']} MB", flush=True)
                runs[name].append(run)
                if not keep:
                    shutil.rmtree(out, ignore_errors=True)
    return runs


def adares_command(*extra: str) -> Callable[[Path, Path], list[str]]:
    exe = [sys.executable, "-m", "adares.cli", "extract", "--hop", "5ms", "--n-mels", "128", "-q", *extra]
    return lambda source, out: [*exe, str(source), str(out)]


def naive_command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", NAIVE_LOOP, str(source), str(out)]


NAIVE = "naive loop (librosa, 1 process)"
STAGES = ("decode", "front end", "estimator", "merge, log, assemble", "log, assemble", "write", "total")
"""The breakdown's stages, in the order a file goes through them."""


def side_name(model: str, fmt: str, device: str = "cpu") -> str:
    on = "" if device == "cpu" else f" --device {device}"
    return f"adares extract --model {model} --format {fmt}{on}"


# ---------------------------------------------------------------- per-file CPU breakdown (one process)


class Stages:
    """User and system CPU seconds (``getrusage``) and wall seconds, accumulated per named stage."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = {}

    def time(self, name: str, fn: Callable[[], object]) -> object:
        before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = fn()
        after = resource.getrusage(resource.RUSAGE_SELF)
        totals = self.cpu.setdefault(name, [0.0, 0.0, 0.0])
        totals[0] += after.ru_utime - before.ru_utime
        totals[1] += after.ru_stime - before.ru_stime
        totals[2] += time.perf_counter() - wall
        return result


def _writer(fmt: str, folder: Path) -> tuple[Callable[[object, str], None], Callable[[], None]]:
    """(write one file's features, finish) for ``fmt``, writing under ``folder`` as a run would."""
    from adares.shards import ShardWriter
    from adares.store import write_features, write_sample

    if fmt == "npz":
        return (lambda features, key: write_features(features, folder / f"{key}.npz")), (lambda: None)
    writer = ShardWriter(folder / "shards", max_files=16)  # the pool's batches hold at most 16 files
    return (lambda features, key: write_sample(features, writer, key=key, dtype="float32")), writer.finish


def breakdown_clips(model: str, fmt: str, files: list[Path], *, workdir: Path, batch: int = 16) -> dict:
    """Per-file CPU (ms) of each stage of the batched path a worker takes for short files."""
    import torch

    import adares
    from adares.extractor import batch_power, feature_meta
    from adares.features import Features, uniform_spans
    from adares.functional.merge import compress, output_lengths
    from adares.functional.merge import spans as merge_spans
    from adares.pipeline.config import ExtractConfig

    torch.set_num_threads(1)
    extractor = ExtractConfig(frontend={"n_mels": 128}, model=model).build_extractor()
    frontend = extractor.frontend
    stages = Stages()
    write, finish = _writer(fmt, workdir)

    def merged_features(items, power, frames, waveform, lengths) -> list:  # noqa: ANN001 - tensors
        raw = stages.time(
            "estimator",
            lambda: extractor.importance.score_batch(
                waveform=waveform, lengths=lengths, power=power, frames=frames, frontend=frontend
            ),
        )

        def merge() -> list:
            out_frames = output_lengths(frames, reduction=extractor.reduction)
            merged = compress(power, raw.to(torch.float32), out_frames=out_frames, lengths=frames)
            ranges = merge_spans(
                merged.scores,
                merged.lengths,
                hop_samples=frontend.hop_samples,
                num_samples=lengths,
                offset_samples=frontend.frame_offset_samples,
            ).numpy()
            mel, scores = frontend.log_mel(merged.power).numpy(), merged.scores.numpy()
            return [
                Features(
                    mel=np.ascontiguousarray(mel[i, : int(merged.lengths[i])]),
                    spans=np.ascontiguousarray(ranges[i, : int(merged.lengths[i])]),
                    scores=np.ascontiguousarray(scores[i, : int(frames[i])]),
                    meta=feature_meta(extractor, num_samples=len(samples)),
                )
                for i, samples in enumerate(items)
            ]

        return stages.time("merge, log, assemble", merge)

    def fine_features(items, power, frames) -> list:  # noqa: ANN001 - tensors
        def assemble() -> list:
            mel = frontend.log_mel(power).numpy()
            return [
                Features(
                    mel=np.ascontiguousarray(mel[i, : int(frames[i])]),
                    spans=uniform_spans(
                        int(frames[i]),
                        hop_samples=frontend.hop_samples,
                        num_samples=len(samples),
                        offset_samples=frontend.frame_offset_samples,
                    ),
                    scores=None,
                    meta=feature_meta(extractor, num_samples=len(samples)),
                )
                for i, samples in enumerate(items)
            ]

        return stages.time("log, assemble", assemble)

    with torch.inference_mode():
        for first in range(0, len(files), batch):
            group = files[first : first + batch]
            items = [stages.time("decode", lambda path=path: adares.load(path, sr=SR)[0]) for path in group]
            power, frames, waveform, lengths = stages.time(
                "front end", lambda items=items: batch_power(frontend, items)
            )
            if model == "none":
                features = fine_features(items, power, frames)
            else:
                features = merged_features(items, power, frames, waveform, lengths)
            for path, item in zip(group, features, strict=True):
                stages.time("write", lambda item=item, key=path.stem, write=write: write(item, key))
            stages.time("write", finish)
            if fmt == "shards":
                write, finish = _writer(fmt, workdir / f"b{first}")
    return _per_unit(stages, len(files))


def breakdown_long(model: str, fmt: str, path: Path, *, seconds: float, workdir: Path) -> dict:
    """CPU (s) per hour of audio of each stage of the in-memory path, on the first ``seconds`` of ``path``."""
    import torch

    import adares
    from adares.extractor import feature_meta, fine_power
    from adares.features import Features, uniform_spans
    from adares.functional.merge import compress, output_lengths
    from adares.functional.merge import spans as merge_spans
    from adares.pipeline.config import ExtractConfig

    torch.set_num_threads(1)
    extractor = ExtractConfig(frontend={"n_mels": 128}, model=model).build_extractor()
    frontend = extractor.frontend
    stages = Stages()
    write, finish = _writer(fmt, workdir)
    with torch.inference_mode():
        samples = stages.time("decode", lambda: adares.load(path, sr=SR, end=seconds)[0])
        power = stages.time("front end", lambda: fine_power(frontend, samples))
        if model == "none":

            def assemble() -> Features:
                mel = frontend.log_mel(power).numpy()
                spans = uniform_spans(
                    mel.shape[0],
                    hop_samples=frontend.hop_samples,
                    num_samples=len(samples),
                    offset_samples=frontend.frame_offset_samples,
                )
                return Features(
                    mel=mel, spans=spans, scores=None, meta=feature_meta(extractor, num_samples=len(samples))
                )

            features = stages.time("log, assemble", assemble)
        else:
            raw = stages.time("estimator", lambda: extractor.importance.score(samples, power, frontend=frontend))

            def merge() -> Features:
                out_frames = output_lengths(torch.tensor([power.shape[0]]), reduction=extractor.reduction)
                merged = compress(power[None], raw[None].to(torch.float32), out_frames=out_frames)
                count = int(merged.lengths[0])
                ranges = merge_spans(
                    merged.scores,
                    merged.lengths,
                    hop_samples=frontend.hop_samples,
                    num_samples=len(samples),
                    offset_samples=frontend.frame_offset_samples,
                )
                return Features(
                    mel=frontend.log_mel(merged.power[0, :count]).numpy(),
                    spans=ranges[0, :count].numpy(),
                    scores=merged.scores[0].numpy(),
                    meta=feature_meta(extractor, num_samples=len(samples)),
                )

            features = stages.time("merge, log, assemble", merge)
        stages.time("write", lambda: write(features, path.stem))
        stages.time("write", finish)
    return _per_unit(stages, len(samples) / SR / 3600, scale=1.0)


def _per_unit(stages: Stages, units: float, *, scale: float = 1000.0) -> dict:
    """Each stage's user, system and wall time per unit (ms per file, or s per hour with ``scale=1``)."""
    result = {
        name: {"user": user * scale / units, "system": system * scale / units, "wall": wall * scale / units}
        for name, (user, system, wall) in stages.cpu.items()
    }
    result["total"] = {key: sum(stage[key] for stage in result.values()) for key in ("user", "system", "wall")}
    return result


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 clips, two 12-minute files")
    parser.add_argument("--clips", type=int, default=None, help=f"one-second clips (default {RECORD['clips']})")
    parser.add_argument("--hours", type=float, default=None, help=f"hours per long file (default {RECORD['hours']:g})")
    parser.add_argument("--long-files", type=int, default=None, help="long files (default 4)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of one block per side")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per block")
    parser.add_argument("--models", default="none,flux,default", help="comma-separated --model values")
    parser.add_argument("--formats", default="npz,shards", help="comma-separated --format values")
    parser.add_argument("--devices", default="cpu", help="comma-separated --device values")
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for adares (default: all cores)")
    parser.add_argument("--dask", action="store_true", help="also time a local Dask cluster (2 workers, npz)")
    parser.add_argument("--sample", type=int, default=400, help="clips in the per-file breakdown")
    parser.add_argument("--excerpt", type=float, default=300.0, help="seconds of a long file in its breakdown")
    parser.add_argument(
        "--interval", type=float, default=0.25, help="seconds between /proc samples (the sampler costs CPU too)"
    )
    parser.add_argument("--record", action="store_true", help="update RESULTS.md even with smaller sizes (labelled)")
    parser.add_argument("--skip-long", action="store_true", help="clips only")
    parser.add_argument(
        "--only-breakdown", action="store_true", help="redo the CPU breakdown of the results in --json, keep its runs"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "extract.json")
    args = parser.parse_args()
    quick = {"clips": 1000, "hours": 0.2, "long_files": 2} if args.quick else RECORD
    clips = args.clips or quick["clips"]
    hours = args.hours or quick["hours"]
    long_files = args.long_files or quick["long_files"]
    models = [m for m in args.models.split(",") if m]
    formats = [f for f in args.formats.split(",") if f]
    devices = [d for d in args.devices.split(",") if d]
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    full = clips >= RECORD["clips"] and hours >= RECORD["hours"] and long_files >= RECORD["long_files"]
    of_record = (full or args.record) and not args.skip_long and devices == ["cpu"] and args.jobs is None

    load_before = os.getloadavg()
    started = time.strftime("%H:%M", time.gmtime())
    previous = json.loads(args.json.read_text()) if args.only_breakdown else None
    results: dict = previous or {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "commit": commit(),
        "clips": clips,
        "long_files": long_files,
        "hours_per_long_file": hours,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "jobs": args.jobs,
        "full_size": full,
        "load_average_before": load_before,
        "sample_interval_s": args.interval,
        "rows": [],
    }

    sides: dict[str, Callable[[Path, Path], list[str]]] = {NAIVE: naive_command}
    for model in models:
        for fmt in formats:
            for device in devices:
                sides[side_name(model, fmt, device)] = adares_command(
                    "--model", model, "--format", fmt, "--device", device, *jobs
                )
    if args.dask:
        sides[f"adares extract --model {models[0]} (Dask local cluster, 2 workers)"] = adares_command(
            "--model", models[0], "--dask-workers", "2"
        )

    short = clip_corpus(clips)
    corpora = [(f"{clips:,} x 1 s clips", short / "audio", clips, clips * 1.0)]
    if not args.skip_long:
        long = long_corpus(long_files, hours)
        corpora.append(
            (f"{long_files} x {hours * 60:g} min files", long / "audio", long_files, long_files * hours * 3600)
        )
    warm = short / "audio" / "000"  # the first 500 clips: each side's untimed warm-up

    with tempfile.TemporaryDirectory(prefix="adares-bench-") as tmp:
        work = Path(tmp)
        for index, (corpus_name, corpus, count, audio_seconds) in enumerate([] if args.only_breakdown else corpora):
            read_all(corpus)
            outputs = work / f"outputs{index}"
            outputs.mkdir()
            # clip outputs stay (deleting thousands of files slows the next run's creations); a long
            # corpus's few large outputs are deleted after each run (the disk is shared)
            keep = index == 0 and shutil.disk_usage(work).free > 1.5 * len(sides) * args.rounds * args.repeats * (
                audio_seconds * 200 * 128 * 4
            )
            print(f"\n{corpus_name}: {audio_seconds / 3600:.2f} h of audio", flush=True)
            runs = rounds_of_blocks(
                sides,
                corpus=corpus,
                warm_corpus=warm,
                rounds=args.rounds,
                repeats=args.repeats,
                workdir=outputs,
                keep=keep,
                interval=args.interval,
            )
            shutil.rmtree(outputs, ignore_errors=True)
            naive = statistics.median(run["wall_s"] for run in runs[NAIVE])
            for name, side_runs in runs.items():
                walls = [run["wall_s"] for run in side_runs]
                seconds = statistics.median(walls)
                row = {
                    "corpus": corpus_name,
                    "long": index == 1,
                    "side": name,
                    "median_seconds": seconds,
                    "runs_seconds": walls,
                    "files_per_second": count / seconds,
                    "real_time_factor": audio_seconds / seconds,
                    "speedup_vs_naive": naive / seconds,
                    "user_s": statistics.median(run["user_s"] for run in side_runs),
                    "system_s": statistics.median(run["system_s"] for run in side_runs),
                    "tree_pss_mb": max(run["tree_pss_mb"] for run in side_runs),
                    "tree_rss_mb": max(run["tree_rss_mb"] for run in side_runs),
                    "largest_process_rss_mb": max(run["largest_process_rss_mb"] for run in side_runs),
                    "kept_outputs": keep,
                    "load_1min_after_runs": [run["load_1min_after"] for run in side_runs],
                }
                results["rows"].append(row)
            print_table([row for row in results["rows"] if row["corpus"] == corpus_name])

        print("\nper-file CPU breakdown (one process, one torch thread)", flush=True)
        sample = sorted((short / "audio").rglob("*.wav"))[:: max(1, clips // args.sample)][: args.sample]
        results["breakdown"] = {"clips": {}, "long": {}, "sample": len(sample), "excerpt_seconds": args.excerpt}
        for model in models:
            for fmt in formats:
                name = f"{model}, {fmt}"
                folder = work / f"breakdown-{model}-{fmt}"
                (folder / "warm").mkdir(parents=True)
                # untimed first: the first calls build caches and fault their buffers in
                breakdown_clips(model, fmt, sample[:16], workdir=folder / "warm")
                results["breakdown"]["clips"][name] = breakdown_clips(model, fmt, sample, workdir=folder)
                if not args.skip_long:
                    first_long = sorted((corpora[1][1]).glob("*.flac"))[0]
                    breakdown_long(model, fmt, first_long, seconds=30.0, workdir=folder / "warm")
                    results["breakdown"]["long"][name] = breakdown_long(
                        model, fmt, first_long, seconds=min(args.excerpt, hours * 3600), workdir=folder
                    )
                shutil.rmtree(folder, ignore_errors=True)
                print(f"  {name}: {results['breakdown']['clips'][name]['total']}", flush=True)

    if previous is None:
        results["load_average_after"] = os.getloadavg()
        results["window_utc"] = f"{started}-{time.strftime('%H:%M', time.gmtime())}"
    else:
        results["breakdown_window_utc"] = f"{started}-{time.strftime('%H:%M', time.gmtime())}"
    results["targets"] = targets(results)
    for line in results["targets"]:
        print(line["text"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    if of_record:
        update_section("extract", markdown(results))
        print("updated benchmarks/RESULTS.md")


def print_table(rows: list[dict]) -> None:
    print(f"{'side':<48} {'median s':>9} {'min-max':>13} {'files/s':>9} {'x RT':>7} {'vs naive':>9} {'PSS MB':>7}")
    for row in rows:
        runs = row["runs_seconds"]
        print(
            f"{row['side']:<48} {row['median_seconds']:9.2f} {min(runs):6.2f}-{max(runs):<6.2f} "
            f"{row['files_per_second']:9.1f} {row['real_time_factor']:7.0f} {row['speedup_vs_naive']:8.2f}x "
            f"{row['tree_pss_mb']:7d}"
        )


def targets(results: dict) -> list[dict]:
    """Issue 16's targets for the default compressor, each with what was measured and whether it is met."""
    found = []
    for row in results["rows"]:
        if "--model default" not in row["side"] or "--device" in row["side"] or "Dask" in row["side"]:
            continue
        fmt = "shards" if "--format shards" in row["side"] else "npz"
        if row["long"]:
            goal, value, unit = TARGETS["real_time"], row["real_time_factor"], "x real time"
            what = f"default, {fmt}, long files: >= {goal:,.0f}x real time"
        else:
            goal, value, unit = TARGETS[fmt], row["speedup_vs_naive"], "x the naive loop"
            what = f"default, {fmt}, clips: >= {goal:g}x the naive loop"
        met = value >= goal
        found.append({"target": what, "measured": value, "met": met, "text": f"{what}: {value:,.2f}{unit}"})
    return found


def markdown(results: dict) -> str:
    clips, hours, files = results["clips"], results["hours_per_long_file"], results["long_files"]
    label = "" if results["full_size"] else " (a smaller run of record: not the sizes issue 16 asks for)"
    load = results["load_average_before"]
    during = [value for row in results["rows"] for value in row.get("load_1min_after_runs", [0.0])]
    lines = [
        f"## Corpus extraction: `adares extract` against the naive librosa loop{label}",
        "",
        stamp(),
        "",
        f"`make bench-extract`: {clips:,} one-second clips and {files} files of {hours * 60:g} minutes "
        f"(cached under `benchmarks/cache/extract`), whole processes (start-up and imports included), "
        f"median of {results['rounds']} round(s) x {results['repeats']} run(s) per side, each side in its own "
        "block after one untimed warm-up run on 500 clips, each run after `sync` into a fresh folder, the "
        "corpus read into the page cache first. Clip outputs are kept until the benchmark ends (deleting "
        "thousands of files slows the next thousands on this `discard`-mounted disk); long-file outputs are "
        "deleted after each run. The naive loop is `librosa.load` + `librosa.feature.melspectrogram` + "
        "`np.save` per file in one process; adares uses all cores (`--hop 5ms --n-mels 128`). Peak memory is "
        "the largest sum of PSS over the command's process tree (shared pages counted once), sampled from "
        f"/proc every {results.get('sample_interval_s', 0.1):g} s; CPU is user and system time of the command "
        "and the processes it waited for. "
        f"Run {results['window_utc']} UTC; load average (1, 5, 15 min) {load[0]:.2f}, {load[1]:.2f}, "
        f"{load[2]:.2f} before, {results['load_average_after'][0]:.2f} after; the 1-minute load average after "
        f"each timed run {min(during):.2f}-{max(during):.2f} (this benchmark's own processes included).",
        "",
        "| corpus | side | median s | runs s (min-max) | files/s | x real time | vs naive | user s | system s "
        "| peak PSS MB (tree) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        runs = row["runs_seconds"]
        lines.append(
            f"| {row['corpus']} | {row['side']} | {row['median_seconds']:.2f} | {min(runs):.2f}-{max(runs):.2f} | "
            f"{row['files_per_second']:.1f} | {row['real_time_factor']:,.0f} | {row['speedup_vs_naive']:.2f}x | "
            f"{row['user_s']:.1f} | {row['system_s']:.1f} | {row['tree_pss_mb']:,} |"
        )
    lines += ["", "Targets (issue 16, default compressor, this 2-core machine):", ""]
    lines += ["| target | measured | met |", "| --- | ---: | --- |"]
    for target in results["targets"]:
        lines.append(f"| {target['target']} | {target['measured']:,.2f}x | {'yes' if target['met'] else '**no**'} |")
    breakdown = results.get("breakdown", {})
    for part, unit, what in (
        ("clips", "ms per file", f"{breakdown.get('sample', 0)} of the clips in batches of 16, as a worker takes them"),
        (
            "long",
            "s per hour of audio",
            f"the first {breakdown.get('excerpt_seconds', 0):g} s of a long file by the in-memory path, scaled to "
            "an hour (the run streams a long file in blocks: the same stages, the audio decoded once per pass)",
        ),
    ):
        table = breakdown.get(part)
        if not table:
            continue
        stages = [stage for stage in STAGES if any(stage in row for row in table.values())]
        lines += [
            "",
            f"CPU breakdown, {unit} (user + system, system in brackets), one process with one torch thread as a "
            f"worker has, timing the library's stages: {what}.",
            "",
            "| model, format | " + " | ".join(stages) + " |",
            "| --- | " + " | ".join("---:" for _ in stages) + " |",
        ]
        for name, row in table.items():
            cells = [
                f"{row[s]['user'] + row[s]['system']:.2f} ({row[s]['system']:.2f})" if s in row else "-" for s in stages
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
