#!/usr/bin/env python3
"""Content digests of the generated benchmark data, to tell whether two machines made the same audio.

A task's digest is the sha256 of its ``labels.csv`` and, clip by clip in that file's order, the
clip's path and its decoded 16-bit samples (not the FLAC bytes, whose encoder metadata can differ
between library builds while the audio is the same). ``benchmarks/data/digests.json`` records the
digests of the data the committed results were measured on, with the tools that made it;
``make data`` checks a fresh generation against it and says which tasks differ. A difference does
not stop anything: the results stay valid as measurements, but runs on other audio are not paired
with them and a model rebuilt from other audio has other weights.

    python benchmarks/data/digests.py benchmarks/data/generated benchmarks/data/generated-wide
    python benchmarks/data/digests.py --record benchmarks/data/generated benchmarks/data/generated-wide
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

RECORD = Path(__file__).resolve().parent / "digests.json"


def task_digest(folder: Path) -> str:
    """sha256 of a task folder's ``labels.csv`` and its clips' decoded samples, in that file's order.

    Parameters
    ----------
    folder : Path
        A task folder (``labels.csv`` and the audio it names).

    Returns
    -------
    str
        64 hex digits.
    """
    table = folder / "labels.csv"
    digest = hashlib.sha256(table.read_bytes())
    with open(table, newline="") as handle:
        for row in csv.DictReader(handle):
            samples, rate = sf.read(folder / row["path"], dtype="int16", always_2d=True)
            digest.update(f"{row['path']}\0{rate}\0{samples.shape}\n".encode())
            digest.update(np.ascontiguousarray(samples).tobytes())
    return digest.hexdigest()


def digests(roots: list[Path]) -> dict[str, dict[str, str]]:
    """``{"<root name>/<task>": {"sha256": ..., "tools": ...}}`` for every task folder under ``roots``."""
    found = {}
    for root in roots:
        for folder in sorted(p for p in root.iterdir() if (p / "labels.csv").is_file()):
            meta = json.loads((folder / "dataset.json").read_text()) if (folder / "dataset.json").is_file() else {}
            found[f"{root.name}/{folder.name}"] = {
                "sha256": task_digest(folder),
                "tools": meta.get("tool_versions", {}),
            }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="generated data folders (one sub-folder per task)")
    parser.add_argument("--record", action="store_true", help=f"write the digests to {RECORD.name}")
    args = parser.parse_args(argv)
    missing = [str(root) for root in args.roots if not root.is_dir()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)} (run `make data` first)")
    found = digests(args.roots)
    if args.record:
        RECORD.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
        print(f"recorded {len(found)} task digests in {RECORD}")
        return 0
    recorded = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    differ = 0
    for name, entry in found.items():
        if name not in recorded:
            print(f"{name}: {entry['sha256'][:16]} (no recorded digest)")
        elif recorded[name]["sha256"] == entry["sha256"]:
            print(f"{name}: same audio as the committed results were measured on")
        else:
            differ += 1
            tools = {k: (recorded[name]["tools"].get(k), v) for k, v in entry["tools"].items()}
            changed = {k: f"{a} -> {b}" for k, (a, b) in tools.items() if a != b}
            print(
                f"{name}: OTHER AUDIO than the committed results were measured on; tools changed: {changed or 'none'}"
            )
    if differ:
        print(
            f"{differ} task(s) differ: benchmark runs on this data are not paired with the committed ones "
            "and make train-default gives other weights",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
