"""Training throughput (images/s) of the zoo models over batch sizes, ours against PyTorch.

    python benchmarks/end_to_end.py                          # small and jet, batches 32 64 128 256, cpu
    python benchmarks/end_to_end.py --threads 1              # steadier on a shared machine
    python benchmarks/end_to_end.py --backend cuda --batches 64,256,1024 --json train.json

Each step is the full training step (zero_grad, forward, softmax
cross-entropy, backward, Adam) on one fixed batch; PyTorch runs the same
architecture, built from our model's configuration, with the same batch and
Adam settings, in a separate process, the two sides taking turns (A B A B).
``gpucnn bench --ops train`` runs one batch size of this.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from gpucnn import get_backend
from gpucnn.bench import end_to_end
from gpucnn.bench.peak import peak_for
from gpucnn.bench.reference import ReferenceProcess
from gpucnn.bench.suite import Settings, clock_for, compare, training_record
from gpucnn.bench.timing import limit_threads


def sweep(backend, models, batches, ref, peak, settings) -> list[dict]:
    """One training record per model and batch size, each printed as a row when done."""
    reference = None if ref is None else ref.info
    print(f"{backend.name} on {peak.device}; reference {reference['reference'] if ref else 'none'}")
    print(f"{'model':<6} {'batch':>6} {'ours img/s':>11} {'ref img/s':>10} {'speedup':>8} {'GFLOP/s':>8} "
          f"{'%peak':>6}")
    records = []
    for name in models:
        for batch in batches:
            spec = end_to_end.training_spec(name, batch)
            fn = end_to_end.gpucnn_training_step(backend, spec)
            call = None if ref is None else (
                lambda repeats, warmup, calls, spec=spec: ref.time_training(spec, repeats, warmup, calls))
            ours, theirs, algorithm = compare(fn, clock_for(backend), call, settings)
            r = training_record(backend, spec, ours, theirs, reference if theirs else None, algorithm, peak)
            records.append(r)
            ref_rate = "-" if r["reference_images_per_s"] is None else f"{r['reference_images_per_s']:.0f}"
            speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
            print(f"{name:<6} {batch:>6} {r['images_per_s']:>11.0f} {ref_rate:>10} {speedup:>8} "
                  f"{r['gflops']:>8.1f} {100 * r['peak_fraction']:>5.1f}%", flush=True)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="cpu", help="cpu, cuda or cuda-emu")
    parser.add_argument("--models", default=",".join(end_to_end.MODELS))
    parser.add_argument("--batches", default="32,64,128,256")
    parser.add_argument("--repeats", type=int, default=5, help="steps timed per side and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reference", default="auto", choices=("auto", "torch", "none"))
    parser.add_argument("--threads", type=int, help="CPU threads per side (default: all cores)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    try:
        backend = get_backend(args.backend)
    except (ValueError, RuntimeError) as err:
        print(f"end_to_end: {err}", file=sys.stderr)
        return 2
    peak = peak_for(backend.name, measure_bandwidth=False, threads=args.threads)
    settings = Settings(repeats=args.repeats, rounds=args.rounds, warmup=2, min_sample_s=0.0)
    with contextlib.ExitStack() as stack:
        if args.threads is not None:
            stack.enter_context(limit_threads(args.threads))
        ref = None if args.reference == "none" else stack.enter_context(
            ReferenceProcess("cuda" if backend.name == "cuda" else "cpu", args.reference, args.threads))
        records = sweep(backend, args.models.split(","), [int(b) for b in args.batches.split(",")],
                        ref, peak, settings)
    if args.json:
        Path(args.json).write_text(json.dumps({"peak": peak.to_dict(), "records": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
