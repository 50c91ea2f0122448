"""The long decoder fuzz run (``make fuzz``): mutated audio files through ``adares.load`` and the pipeline.

Cases come from :mod:`tests.fuzz_audio` (seeds of every format libsndfile writes here, mutated by
truncation, byte flips, extreme header fields, splices, insertions, zeroed ranges and overwritten
float exponents), each determined by ``(--seed, index)``. Each case runs in a worker process under a
time limit (a case past it is a hang: the worker is killed and replaced) and an address-space limit
(an allocation bomb becomes a MemoryError, i.e. a crash, instead of taking the machine down). The
oracle is :func:`tests.fuzz_audio.check`: finite float32 samples (``ok``), an AudioDecodeError with a
one-line reason (``named``), or anything else (``crash``).

Then the first ``--pipeline`` cases go through ``adares.pipeline.extract`` (``--model none``, one
process): every file must end as ``ok`` with finite features, or in failures.jsonl with the reason
``adares.load`` gives.

For every failure class, the smallest case is shrunk (tail cuts and removed ranges that keep the
class) and written to ``--examples`` (the regression files of tests/test_audio_fuzz.py).

Optionally (``--atheris-seconds``), a coverage-guided run of ``adares.load`` with atheris, when it
is installed (``pip install atheris``).

Results go to benchmarks/results/fuzz.json and the ``fuzz`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tests.fuzz_audio import Case, cases, check, reason_class, seed_files  # noqa: E402

ADDRESS_SPACE_LIMIT = 4 << 30  # per worker: far above any sane decode, far below the machine


# --------------------------------------------------------------------------------------------
# workers


def _worker(conn: Connection, folder: str) -> None:
    """Judge cases sent as (index, suffix, bytes) until None; reply with the outcome and ru_maxrss."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    import adares.audio  # noqa: F401 - imported before the first case, so its time is not charged to it

    conn.send(("ready", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    while True:
        job = conn.recv()
        if job is None:
            return
        index, suffix, data = job
        path = os.path.join(folder, f"case{index}{suffix}")
        with open(path, "wb") as handle:
            handle.write(data)
        started = time.perf_counter()
        outcome = check(path)
        seconds = time.perf_counter() - started
        os.remove(path)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send((index, outcome.kind, outcome.detail, outcome.message, seconds, maxrss))


class _Slot:
    """One worker process and the case it is judging."""

    def __init__(self, context: mp.context.BaseContext, folder: str) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, folder), daemon=True)
        self.process.start()
        child.close()
        _, self.baseline_kb = self.conn.recv()
        self.case: Case | None = None
        self.deadline = 0.0

    def send(self, case: Case, timeout: float) -> None:
        self.case = case
        self.deadline = time.monotonic() + timeout
        self.conn.send((case.index, case.suffix, case.data))

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()


def run_cases(
    count: int, *, seed: int, workers: int, timeout: float, folder: str
) -> tuple[list[dict], dict[str, float]]:
    """Judge ``count`` cases in ``workers`` processes; one record per case, and memory figures."""
    context = mp.get_context("forkserver")
    seeds = seed_files()
    pending = cases(count, seed=seed, seeds=seeds)
    slots = [_Slot(context, folder) for _ in range(workers)]
    baseline_kb = max(slot.baseline_kb for slot in slots)
    records: list[dict] = []
    peak_kb = baseline_kb
    restarts = 0

    def feed(slot: _Slot) -> bool:
        case = next(pending, None)
        slot.case = case
        if case is not None:
            slot.send(case, timeout)
        return case is not None

    active = {number for number, slot in enumerate(slots) if feed(slot)}
    while active:
        deadline = min(slots[number].deadline for number in active)
        ready = wait([slots[number].conn for number in active], timeout=max(0.0, deadline - time.monotonic()))
        for number in sorted(active):
            slot = slots[number]
            case = slot.case
            if slot.conn in ready:
                try:
                    _, kind, detail, message, seconds, maxrss = slot.conn.recv()
                    peak_kb = max(peak_kb, maxrss)
                except (EOFError, OSError):  # the worker died (a signal, an abort in C code)
                    kind, detail, message, seconds = "crash", "worker died", "", 0.0
                    slot.kill()
                    restarts += 1
                    slots[number] = _Slot(context, folder)
            elif time.monotonic() >= slot.deadline:
                kind, detail, message, seconds = "hang", f"over the {timeout:g} s limit", "", timeout
                slot.kill()
                restarts += 1
                slots[number] = _Slot(context, folder)
            else:
                continue
            records.append(
                {
                    "index": case.index,
                    "label": case.label,
                    "seed": case.seed_name,
                    "size": len(case.data),
                    "kind": kind,
                    "detail": detail,
                    "message": message,
                    "seconds": seconds,
                }
            )
            if not feed(slots[number]):
                active.discard(number)
    for slot in slots:
        slot.stop()
    memory = {"worker_baseline_mb": baseline_kb / 1024, "worker_peak_mb": peak_kb / 1024, "restarts": restarts}
    return records, memory


# --------------------------------------------------------------------------------------------
# shrinking the smallest case of each class


def shrink(data: bytes, suffix: str, folder: str, *, detail: str, budget: int = 400) -> bytes:
    """Smaller bytes that ``check`` still puts in class ``detail``: cut the tail, then remove ranges."""
    path = os.path.join(folder, f"shrink{suffix}")
    tries = 0

    def same(candidate: bytes) -> bool:
        nonlocal tries
        tries += 1
        with open(path, "wb") as handle:
            handle.write(candidate)
        outcome = check(path)
        return outcome.kind == "named" and outcome.detail == detail

    step = len(data) // 2
    while step >= 1 and tries < budget:
        progressed = False
        start = 0
        while start < len(data) and tries < budget:
            candidate = data[:start] + data[start + step :]
            # a cut WAV is also tried with its sizes fixed, so it stays whole rather than truncated
            for variant in (candidate, _fix_riff_sizes(candidate)):
                if len(variant) < len(data) and same(variant):
                    data = variant
                    progressed = True
                    break
            else:
                start += step
        if not progressed:
            step //= 2
    return data


def _fix_riff_sizes(data: bytes) -> bytes:
    """A RIFF/WAVE file with its RIFF size and data size set to what the bytes hold."""
    chunk = data.find(b"data", 12)
    if data[:4] != b"RIFF" or chunk < 0 or chunk + 8 > len(data):
        return data
    riff = struct.pack("<I", len(data) - 8)
    size = struct.pack("<I", len(data) - chunk - 8)
    return data[:4] + riff + data[8 : chunk + 4] + size + data[chunk + 8 :]


def examples(records: list[dict], *, seed: int, folder: str, out: Path) -> list[dict]:
    """The smallest case of each named class, shrunk, written to ``out``; their descriptions."""
    smallest: dict[str, dict] = {}
    for record in records:
        if record["kind"] == "named" and (
            record["detail"] not in smallest or record["size"] < smallest[record["detail"]]["size"]
        ):
            smallest[record["detail"]] = record
    seeds = seed_files()
    out.mkdir(parents=True, exist_ok=True)
    described = []
    for number, (detail, record) in enumerate(sorted(smallest.items())):
        case = next(cases(1, seed=seed, seeds=seeds, start=record["index"]))
        data = shrink(case.data, case.suffix, folder, detail=detail)
        name = f"class{number:02d}_{case.seed_name}{case.suffix}"
        (out / name).write_bytes(data)
        described.append({"file": name, "class": detail, "from_case": case.label, "bytes": len(data)})
    (out / "expected.json").write_text(json.dumps(described, indent=1) + "\n")
    return described


# --------------------------------------------------------------------------------------------
# the pipeline on the first cases


def run_pipeline(count: int, *, seed: int, folder: str) -> dict:
    """Extract the first ``count`` cases with ``--model none``; every file must be accounted for."""
    import numpy as np

    from adares.features import load_features
    from adares.pipeline import ExtractConfig, extract
    from adares.store import FAILURES_NAME, MANIFEST_NAME, read_jsonl

    audio = Path(folder) / "pipeline_in"
    audio.mkdir()
    expected = {}
    for case in cases(count, seed=seed):
        name = f"case{case.index:05d}{case.suffix}"
        (audio / name).write_bytes(case.data)
        outcome = check(audio / name)
        expected[name] = outcome
    out = Path(folder) / "pipeline_out"
    started = time.perf_counter()
    extract(audio, out, config=ExtractConfig(model="none"), jobs=1)
    seconds = time.perf_counter() - started
    failures = {record["source"]: record["error"] for record in read_jsonl(out / FAILURES_NAME)}
    done = {record["source"]: record for record in read_jsonl(out / MANIFEST_NAME) if record["status"] == "ok"}
    problems = []
    for name, outcome in expected.items():
        if name in done:
            mel = load_features(out / done[name]["output"]).mel
            if not np.isfinite(mel).all():
                problems.append(f"{name}: ok with non-finite features")
        elif name in failures:
            if outcome.kind == "named" and reason_class(failures[name]) != outcome.detail:
                problems.append(f"{name}: failures.jsonl says {failures[name]!r}, load says {outcome.detail!r}")
        else:
            problems.append(f"{name}: no record")
    return {
        "files": count,
        "ok": len(done),
        "failed": len(failures),
        "unaccounted_or_wrong": problems,
        "seconds": round(seconds, 1),
    }


# --------------------------------------------------------------------------------------------
# atheris


_ATHERIS_HARNESS = r"""
import os, sys, tempfile
import atheris
with atheris.instrument_imports():
    import adares.audio
from adares.errors import AudioDecodeError
import numpy as np
folder = tempfile.mkdtemp()
path = os.path.join(folder, "input")
def one(data):
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        samples, _ = adares.audio.load(path, sr=16000)
    except AudioDecodeError as error:
        if "\n" in str(error):
            raise RuntimeError("reason is not one line: " + repr(str(error)))
        return
    if not np.isfinite(samples).all():
        raise RuntimeError("non-finite samples returned")
atheris.Setup(sys.argv, one)
atheris.Fuzz()
"""


def run_atheris(seconds: int, *, folder: str) -> dict:
    """A coverage-guided run of ``adares.load`` for ``seconds``, seeded with the seed files."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "atheris is not installed (pip install atheris)"}
    corpus = Path(folder) / "atheris_corpus"
    corpus.mkdir()
    for name, data in seed_files().items():
        (corpus / name).write_bytes(data)
    harness = Path(folder) / "harness.py"
    harness.write_text(_ATHERIS_HARNESS)
    command = [
        sys.executable,
        str(harness),
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=4096",
        "-max_len=65536",
        f"-artifact_prefix={folder}/",
        str(corpus),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=seconds + 300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("#") or "ERROR" in line or "crash" in line]
    # libFuzzer's "#runs EVENT cov: ..." lines
    stats = [" ".join(line.split()) for line in lines if re.match(r"#\d+\s", line)]
    artifacts = sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    return {
        "ran": True,
        "returncode": done.returncode,
        "last_status": stats[-1] if stats else "",
        "errors": [line for line in lines if not line.startswith("#")][:10],
        "artifacts": artifacts,
        "corpus_files": len(list(corpus.iterdir())),
    }


# --------------------------------------------------------------------------------------------
# report


def _cell(text: str) -> str:
    """``text`` safe in a Markdown table cell."""
    return text.replace("|", "\\|")


def report(result: dict) -> str:
    from _report import stamp

    counts = result["counts"]
    memory = result["memory"]
    lines = [
        "## Decoder fuzzing: mutated audio files through `adares.load` and the pipeline",
        "",
        stamp(),
        "",
        f"`make fuzz`: {result['cases']:,} cases (seed {result['seed']}) from small files of every format "
        f"libsndfile writes here ({', '.join(result['seed_formats'])}), each mutated by one to three of: "
        "truncation, byte flips in the header or anywhere, extreme size/rate/channel fields, splices of two "
        "formats, inserted or zeroed ranges, overwritten float exponents. Each case in a worker process under a "
        f"{result['timeout']:g} s limit and a {ADDRESS_SPACE_LIMIT >> 30} GiB address-space limit; "
        f"{result['workers']} workers, {result['seconds']:.0f} s in all.",
        "",
        "| cases | ok | named failures | crashes | hangs | slowest case | worker peak RSS |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {result['cases']:,} | {counts.get('ok', 0):,} | {counts.get('named', 0):,} | {counts.get('crash', 0)} "
        f"| {counts.get('hang', 0)} | {result['slowest_seconds']:.2f} s | {memory['worker_peak_mb']:.0f} MB "
        f"({memory['worker_baseline_mb']:.0f} MB after import) |",
        "",
        "Named failures by class (numbers shown as #); the smallest file of each, shrunk, is a regression "
        "file of tests/test_audio_fuzz.py (tests/data/fuzz):",
        "",
        "| class | cases |",
        "| --- | ---: |",
    ]
    lines += [f"| {_cell(detail)} | {count:,} |" for detail, count in result["classes"]]
    if result["crashes"]:
        lines += ["", "Crashes and hangs:", ""] + [f"- {item}" for item in result["crashes"][:20]]
    pipeline = result.get("pipeline")
    if pipeline:
        lines += [
            "",
            f"Pipeline: the first {pipeline['files']:,} cases through `adares extract --model none` "
            f"({pipeline['seconds']:.0f} s): {pipeline['ok']:,} ok with finite features, {pipeline['failed']:,} "
            f"in failures.jsonl with the reason `adares.load` gives; unaccounted or mismatched: "
            f"{len(pipeline['unaccounted_or_wrong'])}.",
        ]
    atheris = result.get("atheris")
    if atheris:
        if atheris.get("ran"):
            lines += [
                "",
                f"atheris (coverage-guided, libFuzzer) on `adares.load`, {result['atheris_seconds']} s from the "
                f"seed files: {atheris['last_status'] or 'no status line'}; findings: "
                f"{', '.join(atheris['artifacts']) or 'none'}.",
            ]
            lines.append(
                "It guides itself by the branches of the Python code only (adares.audio, soundfile): libsndfile's "
                "C code is not instrumented, so its coverage says little about the decoders themselves."
            )
        else:
            lines += ["", f"atheris: not run ({atheris['why']})."]
    lines += [
        "",
        "Found by this fuzzer and fixed, each with a regression test in tests/test_audio_fuzz.py: a header "
        "rate of 1 Hz turned a 16 kB WAV into 64 million samples (256 MB, 2-5 s) when resampled to 16 kHz, and "
        "a rate of 2^30 resampled to nothing and raised IndexError (rates outside 1 kHz-1 MHz are now refused by "
        "name); one read allocated 2^18 frames times the declared channels (now at most 8 x 2^18 samples); "
        "libsndfile's 'File does not exist' (of a file that exists), 'SF_INFO struct incomplete' and "
        "'Unspecified internal error' are replaced by what they mean. Float samples beyond 2^31 (what a flipped "
        "exponent byte gives) are refused as out of range; up to it, features are finite and equal a float64 "
        "front end's in the log domain.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--pipeline", type=int, default=600, help="cases also run through the pipeline (0: none)")
    parser.add_argument("--atheris-seconds", type=int, default=0, help="coverage-guided run length (0: none)")
    parser.add_argument("--examples", type=Path, default=None, help="write the shrunk smallest case per class here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    parser.add_argument("--no-report", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="adares-fuzz-") as folder:
        started = time.perf_counter()
        records, memory = run_cases(
            args.cases, seed=args.seed, workers=args.workers, timeout=args.timeout, folder=folder
        )
        seconds = time.perf_counter() - started
        counts = collections.Counter(record["kind"] for record in records)
        classes = collections.Counter(record["detail"] for record in records if record["kind"] == "named")
        crashes = [f"{r['label']}: {r['kind']}: {r['detail']}" for r in records if r["kind"] in ("crash", "hang")]
        print(f"{len(records)} cases in {seconds:.0f} s: {dict(counts)}", flush=True)
        result = {
            "cases": len(records),
            "seed": args.seed,
            "seed_formats": sorted(seed_files()),
            "workers": args.workers,
            "timeout": args.timeout,
            "seconds": seconds,
            "counts": dict(counts),
            "classes": classes.most_common(),
            "crashes": crashes,
            "slowest_seconds": max((r["seconds"] for r in records if r["kind"] != "hang"), default=0.0),
            "slowest": sorted(records, key=lambda r: r["seconds"])[-5:],
            "memory": memory,
        }
        if args.examples is not None:
            result["examples"] = examples(records, seed=args.seed, folder=folder, out=args.examples)
        if args.pipeline:
            result["pipeline"] = run_pipeline(min(args.pipeline, args.cases), seed=args.seed, folder=folder)
            print(f"pipeline: {result['pipeline']}", flush=True)
        if args.atheris_seconds:
            result["atheris_seconds"] = args.atheris_seconds
            result["atheris"] = run_atheris(args.atheris_seconds, folder=folder)
            print(f"atheris: {result['atheris']}", flush=True)
    for record in result["slowest"]:
        record.pop("message", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_report:
        from _report import update_section

        update_section("fuzz", report(result))
    print(report(result))
    if counts.get("crash", 0) or counts.get("hang", 0):
        sys.exit(1)


if __name__ == "__main__":
    main()
