#!/usr/bin/env python3
"""Generate the benchmark datasets (keywords, pitch, drums) from Debian-packaged audio tools.

Writes, per task, ``OUT/<task>/audio/<split>/<label>/*.flac`` (16 kHz mono PCM16 FLAC),
``labels.csv`` (``path,label,split``, paths relative to the task folder), ``clips.jsonl`` (every
clip's generation parameters and measured levels) and ``dataset.json`` (counts, seed, tool
versions, parameters, which sources went to which split). See ``benchmarks/data/README.md``.

Every random choice is planned up front from ``--seed``, so the output does not depend on
``--jobs`` or on the order in which the process pool finishes. A task is built in a hidden
``.<task>.partial`` folder and swapped in only when complete, so an interrupted run never leaves
a half-written dataset under the real name.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import common, drums, dsp, keywords, pitch, splits, tools  # noqa: E402

TASKS = {"keywords": keywords, "pitch": pitch, "drums": drums}
DEFAULT_OUT = Path(__file__).resolve().parent / "generated"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (one sub-folder per task)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to build")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the clip counts (0.1 for a quick run)")
    parser.add_argument("--jobs", type=int, default=_usable_cpus(), help="worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--variety",
        choices=("standard", "wide"),
        default="standard",
        help="standard: the benchmark recipe; wide: more accents, rates, pitches, velocities (extra material)",
    )
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        parser.error(f"--tasks: unknown {unknown or 'empty list'}; choose from {', '.join(TASKS)}")
    if not args.scale > 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    args.tasks = tasks
    return args


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _split_keys(task: str, clip: common.Clip) -> list[str]:
    """What must never appear in two splits: voice variant and ambience, instrument, recording."""
    if task == "keywords":
        keys = [f"variant:{clip['variant']}"] if "variant" in clip else []
        return keys + ([f"ambience:{clip['noise']}"] if clip["noise"] not in common.NOISE_COLOURS else [])
    if task == "pitch":
        return [f"{clip['font']}:{clip['program']}"]
    return [f"{clip['kit']}/{clip.get('key', clip.get('sample'))}"]


def check_splits(task: str, records: list[common.Clip]) -> None:
    """Fail loudly if a split-deciding source leaked into two splits or a split lacks a label."""
    seen: dict[str, set[str]] = {}
    for record in records:
        for key in _split_keys(task, record):
            seen.setdefault(key, set()).add(record["split"])
        if "group" in record:
            seen.setdefault(f"group:{record['group']}", set()).add(record["split"])
    leaked = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    if leaked:
        raise RuntimeError(f"{task}: sources in more than one split: {leaked}")
    labels_per_split = {s: {r["label"] for r in records if r["split"] == s} for s in splits.SPLITS}
    labels = set(TASKS[task].LABELS)
    missing = {s: sorted(labels - have) for s, have in labels_per_split.items() if have != labels}
    if missing:
        raise RuntimeError(f"{task}: splits missing labels: {missing}")


def build_task(
    name: str, *, out: Path, scale: float, seed: int, executor: Executor, versions: dict, variety: str = "standard"
) -> dict:
    module = TASKS[name]
    started = time.perf_counter()
    plan: common.TaskPlan = module.plan(scale=scale, seed=seed, map_fn=executor.map, variety=variety)
    planned = time.perf_counter()
    partial = out / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    total = sum(len(job["clips"]) for job in plan.jobs)
    print(f"[{name}] planned {total} clips in {len(plan.jobs)} jobs ({planned - started:.1f} s)", file=sys.stderr)
    futures = [executor.submit(module.render, job, str(partial)) for job in plan.jobs]
    records: list[common.Clip] = []
    for done, future in enumerate(futures, start=1):
        records.extend(future.result())
        if done == len(futures) or done % max(1, len(futures) // 5) == 0:
            print(f"[{name}] {len(records)}/{total} clips", file=sys.stderr)
    records.sort(key=lambda r: r["path"])
    check_splits(name, records)
    rendered = time.perf_counter()

    with open(partial / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label", "split", "group"])
        writer.writerows([r["path"], r["label"], r["split"], r["group"]] for r in records)
    with open(partial / "clips.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    summary = _summary(plan, records, scale=scale, seed=seed, versions=versions)
    summary["seconds"] = {"plan": round(planned - started, 2), "render": round(rendered - planned, 2)}
    (partial / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")

    final = out / name
    if final.exists():
        stale = out / f".{name}.old"
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        partial.rename(final)
        shutil.rmtree(stale)
    else:
        partial.rename(final)
    print(f"[{name}] {len(records)} clips in {time.perf_counter() - started:.1f} s -> {final}", file=sys.stderr)
    return summary


def _summary(plan: common.TaskPlan, records: list[common.Clip], *, scale: float, seed: int, versions: dict) -> dict:
    per_split = {s: Counter(r["label"] for r in records if r["split"] == s) for s in splits.SPLITS}
    rms = [r["rms_dbfs"] for r in records]
    peak = [r["peak_dbfs"] for r in records]
    return {
        "task": plan.name,
        "labels": list(plan.labels),
        "num_clips": len(records),
        "counts": {s: {label: per_split[s][label] for label in plan.labels} for s in splits.SPLITS},
        "split_totals": {s: sum(per_split[s].values()) for s in splits.SPLITS},
        "audio": {
            "sample_rate": dsp.SAMPLE_RATE,
            "channels": 1,
            "format": "FLAC",
            "subtype": "PCM_16",
            "clip_s": plan.clip_s,
        },  # fmt: skip
        "levels_dbfs": {"rms_min": min(rms), "rms_max": max(rms), "peak_max": max(peak)},
        "seed": seed,
        "scale": scale,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "parameters": plan.parameters,
        "split_sources": plan.split_sources,
        "tool_versions": versions,
        "files": {"labels": "labels.csv", "clips": "clips.jsonl"},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        for program in ("espeak-ng", "fluidsynth"):
            tools.require(program)
    except tools.ToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    versions = tools.tool_versions()
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as executor:
        for name in args.tasks:
            build_task(
                name,
                out=args.out,
                scale=args.scale,
                seed=args.seed,
                executor=executor,
                versions=versions,
                variety=args.variety,
            )
    print(f"done in {time.perf_counter() - started:.1f} s ({args.jobs} workers)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
