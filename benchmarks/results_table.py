"""A ``gpucnn bench --json`` file as the Markdown that ``benchmarks/RESULTS.md`` holds.

    python benchmarks/results_table.py out.json >> table.md

Prints the machine and peak lines, the settings, and one table row per record.
"""

from __future__ import annotations

import argparse
import json
import sys

from gpucnn.bench.report import format_header, format_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="a file written by gpucnn bench --json")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    meta = data["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    print(f"Measured {meta['date']}; `{meta['command']}`; {meta['total_s']:.0f} s in all.\n")
    print("```\n" + format_header(meta) + f"\nversions: {versions}\n```\n")
    print(format_markdown(data["records"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
