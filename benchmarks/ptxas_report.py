"""Registers, spills, stack and shared memory of every CUDA kernel, from ``ptxas -v``.

    python benchmarks/ptxas_report.py                     # sm_75 sm_80 sm_86 sm_89 sm_90
    python benchmarks/ptxas_report.py --arch 90 --json ptxas.json

Needs ``nvcc`` (no GPU). A kernel that spills (spill stores/loads > 0), or
whose registers cap the threads per multiprocessor below what its block size
needs, is the first place to look when it is far from the peak. The
occupancy column is the register limit only: 65536 registers per SM shared
by threads that each need ``regs`` registers (allocated in units of 8 per
thread), out of the SM's thread maximum.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
ARCHS = ("75", "80", "86", "89", "90")
MAX_THREADS_PER_SM = {"75": 1024, "80": 2048, "86": 1536, "89": 1536, "90": 2048}
REGISTERS_PER_SM = 65536

ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_info(source: Path, arch: str) -> list[dict]:
    """One dict per kernel of ``source`` compiled for ``sm_<arch>``: registers, spills, stack, smem."""
    command = ["nvcc", f"-arch=sm_{arch}", "-std=c++17", f"-I{KERNELS}", "-Xptxas", "-v", "-c",
               "-o", "/dev/null", str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed on {source.name} for sm_{arch}:\n{result.stderr}")
    rows, current = [], None
    for line in result.stderr.splitlines():
        if m := ENTRY.search(line):
            current = {"source": source.name, "kernel": m.group(1), "arch": m.group(2),
                       "registers": None, "spill_stores": 0, "spill_loads": 0, "stack": 0, "smem": 0}
            rows.append(current)
        elif current and (m := FRAME.search(line)):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        elif current and (m := USED.search(line)):
            current["registers"] = int(m.group(1))
            current["smem"] = int(m.group(2) or 0)
    return rows


def register_limited_threads(registers: int, arch: str) -> int:
    """Threads per SM the register file allows (whole warps, registers in units of 8 per thread)."""
    per_thread = max(8, -(-registers // 8) * 8)
    warps = REGISTERS_PER_SM // (per_thread * 32)
    return min(MAX_THREADS_PER_SM[arch], warps * 32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="*", default=list(ARCHS), help="compute capabilities, e.g. 80 90")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        print("ptxas_report: nvcc not found on PATH", file=sys.stderr)
        return 2
    rows = []
    for source in sorted(KERNELS.glob("*.cu")):
        for arch in args.arch:
            rows += ptxas_info(source, arch)
    header = f"{'source':<32} {'kernel':<40} {'sm':>3} {'regs':>5} {'spill st/ld':>12} {'stack':>6} " \
             f"{'smem':>6} {'occupancy (regs)':>17}"
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: (r["source"], r["kernel"], r["arch"])):
        threads = register_limited_threads(r["registers"], r["arch"])
        r["register_limited_occupancy"] = threads / MAX_THREADS_PER_SM[r["arch"]]
        print(f"{r['source']:<32} {r['kernel']:<40} {r['arch']:>3} {r['registers']:>5} "
              f"{r['spill_stores']:>5}/{r['spill_loads']:<6} {r['stack']:>6} {r['smem']:>6} "
              f"{100 * r['register_limited_occupancy']:>16.0f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
