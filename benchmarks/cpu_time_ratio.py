"""CPU time per op, gpucnn's cpu backend against PyTorch, one thread each: the comparison a busy machine disturbs least.

    python benchmarks/cpu_time_ratio.py --cases D1,D2,L2,J1,J2 --batch 64 [--rounds 2] [--repeats 5]

On a machine shared with other work, wall-clock times measure the scheduler
as much as the code (a process may get a fifth of a core); the CPU time a
single-threaded process spends on an op (``time.process_time``) is far less
disturbed. Each side runs in its own process (as in ``gpucnn bench``), the
two taking turns ``--rounds`` times; each op's time is its best of all
``--repeats`` x ``--rounds`` calls; a case's time is the sum of its three
convolution ops (forward+backward). Also times the digit-CNN training step
(``--train-batch``, 0 to skip). Prints the ours/reference table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

CHILD = r"""
import json, sys, time
side, cases, batch, train_batch, repeats = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
from threadpoolctl import threadpool_limits
if side == "torch":
    import torch
    torch.set_num_threads(1)
from gpucnn.bench import end_to_end, workload
threadpool_limits(1)
if side == "torch":
    from gpucnn.bench.reference import TorchKernels
    kernels = TorchKernels("cpu")
    prepare = lambda case, op: kernels.prepare(case, op, 0)[0]
    train = lambda spec: end_to_end.torch_training_step(kernels, spec)[0]
else:
    import gpucnn
    backend = gpucnn.get_backend("cpu")
    prepare = lambda case, op: workload.prepare(backend, case, op)
    train = lambda spec: end_to_end.gpucnn_training_step(backend, spec)
def best(fn):
    fn(); fn()
    times = []
    for _ in range(repeats):
        t = time.process_time(); fn(); times.append(time.process_time() - t)
    return min(times)
out = {}
for case in workload.with_batch(workload.select(ids=set(cases)), batch):
    out[case.id] = sum(best(prepare(case, op)) for op in case.ops)
if train_batch:
    out["train small"] = best(train(end_to_end.training_spec("small", train_batch)))
print(json.dumps(out))
"""


def run_side(side: str, args) -> dict:
    """{case: CPU seconds} from a fresh process of ``side`` ("gpucnn" or "torch")."""
    out = subprocess.run([sys.executable, "-c", CHILD, side, args.cases, str(args.batch), str(args.train_batch),
                          str(args.repeats)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="D1,D2,L2,J1,J2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    best = {"gpucnn": {}, "torch": {}}
    for _ in range(args.rounds):
        for side in best:
            for case, t in run_side(side, args).items():
                best[side][case] = min(t, best[side].get(case, math.inf))
    ratios = {c: best["torch"][c] / best["gpucnn"][c] for c in best["gpucnn"]}
    print("| case | gpucnn CPU ms | PyTorch CPU ms | PyTorch / gpucnn |")
    print("|---|---:|---:|---:|")
    for c, r in ratios.items():
        print(f"| {c} | {best['gpucnn'][c] * 1e3:.1f} | {best['torch'][c] * 1e3:.1f} | {r:.2f}x |")
    convs = [r for c, r in ratios.items() if not c.startswith("train")]
    if convs:
        print(f"| geomean (convolutions) | | | {math.exp(sum(map(math.log, convs)) / len(convs)):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
