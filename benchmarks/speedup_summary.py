"""Forward+backward speedups per convolution case, their geometric mean, and training steps,
from ``gpucnn bench --json`` files (issue 13's summary).

    python benchmarks/speedup_summary.py conv_b64.json conv_b16.json train.json

Per convolution case: the sum of the medians of its three ops (forward,
backward-data, backward-filter) on each side, and the reference's sum over
ours (above 1: ours faster); the geometric mean over the cases; the speedup
of each training step; and the slowest case. Prints one Markdown row per
file set: ``| D1 | D2 | ... | geomean | min | train |``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def summarize(paths) -> dict:
    """{"cases": {id: speedup}, "geomean", "min", "train": {model: speedup}} over the records of ``paths``."""
    ours, theirs, train = {}, {}, {}
    for path in paths:
        with open(path) as f:
            records = json.load(f)["records"]
        for r in records:
            if r["speedup"] is None:
                continue
            if r["family"] == "conv":
                ours[r["case"]] = ours.get(r["case"], 0.0) + r["median_s"]
                theirs[r["case"]] = theirs.get(r["case"], 0.0) + r["reference_median_s"]
            elif r["family"] == "train":
                train[r["case"]] = r["speedup"]
    cases = {c: theirs[c] / ours[c] for c in ours}
    geomean = math.exp(sum(math.log(s) for s in cases.values()) / len(cases)) if cases else None
    return {"cases": cases, "geomean": geomean, "min": min(cases.values()) if cases else None, "train": train}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="files written by gpucnn bench --json")
    args = parser.parse_args(argv)
    s = summarize(args.json)
    cells = [f"{v:.2f}x" for v in s["cases"].values()]
    cells += [f"{s['geomean']:.2f}x" if s["geomean"] else "-", f"{s['min']:.2f}x" if s["min"] else "-"]
    cells += [f"{v:.2f}x" for v in s["train"].values()]
    header = list(s["cases"]) + ["geomean", "min"] + [f"train {m}" for m in s["train"]]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
