"""Block-size sweep of our one-thread-per-element CUDA kernels (direct convolution, pooling).

    python benchmarks/block_size_sweep.py                      # the quick workload, on the GPU
    python benchmarks/block_size_sweep.py --full --json sweep.json
    python benchmarks/block_size_sweep.py --backend cuda-emu --batch 1 --cases D1,P1   # plumbing check only

For every case and op of the standard workload whose kernel is launched with
``gpucnn.backend.launch.elementwise_launch``, the launch is re-run with each
block size in ``--threads`` (the grid follows: ceil(total / threads), capped),
and timed with CUDA events (many launches per event pair, median of samples).
Kernels launched otherwise (the implicit-GEMM tiles pick their own blocks)
are listed as skipped. The best block size per kernel is the number to put
in ``launch.py`` if it beats the current default everywhere.

Runs on a GPU; on ``cuda-emu`` it only checks that the sweep runs (emulator
times say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gpucnn.backend.cuda as cuda_module
from gpucnn import get_backend
from gpucnn.backend import launch
from gpucnn.bench import workload
from gpucnn.bench.suite import clock_for
from gpucnn.bench.timing import measure

THREADS = (64, 128, 256, 512, 1024)


class CountingLaunch:
    """``elementwise_launch`` with a fixed block size, counting how often the backend asks for it."""

    def __init__(self, threads: int):
        self.threads, self.calls = threads, 0

    def __call__(self, total, threads=None):
        self.calls += 1
        return launch.elementwise_launch(total, self.threads)


def sweep(backend, cases, threads, repeats, min_sample_s):
    """Rows of (case, op, threads, median seconds) for every elementwise-launched op."""
    rows, clock = [], clock_for(backend)
    original = cuda_module.elementwise_launch
    try:
        for case in cases:
            for op in case.ops:
                fn = workload.prepare(backend, case, op)
                for t in threads:
                    counting = CountingLaunch(t)
                    cuda_module.elementwise_launch = counting
                    fn()
                    backend.synchronize()
                    if counting.calls == 0:
                        rows.append({"case": case.id, "op": op, "threads": None, "median_s": None,
                                     "note": f"skipped: {workload.algorithm(backend, case, op)} "
                                             f"does not use elementwise_launch"})
                        break
                    timing = measure(fn, clock, repeats, warmup=1, min_sample_s=min_sample_s)
                    rows.append({"case": case.id, "op": op, "threads": t, "median_s": timing.median_s,
                                 "algorithm": workload.algorithm(backend, case, op)})
                    print(f"  {case.id:>5} {op:<24} {t:>5} threads {timing.median_s * 1e6:10.1f} us",
                          file=sys.stderr, flush=True)
    finally:
        cuda_module.elementwise_launch = original
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="cuda", choices=("cuda", "cuda-emu"))
    parser.add_argument("--full", action="store_true", help="the full batch sizes (default: --quick's)")
    parser.add_argument("--batch", type=int, help="set every batch size")
    parser.add_argument("--cases", help="comma-separated case ids (default: all)")
    parser.add_argument("--threads", default=",".join(map(str, THREADS)), help="block sizes to try")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    try:
        backend = get_backend(args.backend)
    except RuntimeError as err:
        print(f"block_size_sweep: {err}", file=sys.stderr)
        return 2
    ids = None if args.cases is None else set(args.cases.split(","))
    cases = workload.select(ids=ids)
    if args.batch:
        cases = workload.with_batch(cases, args.batch)
    elif not args.full:
        cases = workload.quick(cases)
    threads = [int(t) for t in args.threads.split(",")]
    rows = sweep(backend, cases, threads, args.repeats, 2e-3 if backend.name == "cuda" else 0.0)

    best = {}
    for r in rows:
        if r["median_s"] is not None:
            key = (r["case"], r["op"])
            if key not in best or r["median_s"] < best[key]["median_s"]:
                best[key] = r
    default = launch.ELEMENTWISE_THREADS
    print(f"{'case':<6} {'op':<24} {'best threads':>12} {'best us':>10} {f'{default} threads us':>16} {'gain':>6}")
    for (case, op), r in best.items():
        base = next(x for x in rows if x["case"] == case and x["op"] == op and x["threads"] == default)
        print(f"{case:<6} {op:<24} {r['threads']:>12} {r['median_s'] * 1e6:>10.1f} "
              f"{base['median_s'] * 1e6:>16.1f} {base['median_s'] / r['median_s']:>5.2f}x")
    for r in rows:
        if r["median_s"] is None:
            print(f"{r['case']:<6} {r['op']:<24} {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": backend.name, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
