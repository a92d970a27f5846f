"""gpucnn's cpu backend with one thread against two, optionally beside a process that keeps one core busy.

    python benchmarks/threads_under_load.py [--busy] [--rounds 3] [--repeats 5]

The question (issue 13): on a machine where other work holds a core, do two
threads ever make gpucnn slower than one (threads waiting for a descheduled
partner, or spinning)? Each setting runs in its own process, the two taking
turns ``--rounds`` times (A B A B); each process times the forward+backward
of convolution case D2 (batch 64) and the digit-CNN training step (batch
128), ``--repeats`` calls each, wall clock. ``--busy`` starts a pure-Python
busy loop in its own session for the duration (a competing load the
scheduler treats as another user's). Prints the median of each setting and
the ratio to one thread (below 1: two threads faster), for
``gpucnn.set_threads(2)`` as it is (BLAS at two threads outside the
backend's own calls, where the Dense layers use it), with BLAS then set
back to one thread, and that with the pool fixed at two threads
(``cpu_pool.ADAPT_TO_LOAD`` off: no giving up the cores other work runs on).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
threads, blas, adapt, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "adapt", int(sys.argv[4])
import gpucnn
from threadpoolctl import threadpool_limits
from gpucnn.backend import cpu_pool
from gpucnn.bench import end_to_end, workload
gpucnn.set_threads(threads)
threadpool_limits(blas, user_api="blas")
cpu_pool.ADAPT_TO_LOAD = adapt
backend = gpucnn.get_backend("cpu")
case = workload.with_batch(workload.select(ids={"D2"}), 64)[0]
conv = [workload.prepare(backend, case, op) for op in case.ops]
step = end_to_end.gpucnn_training_step(backend, end_to_end.training_spec("small", 128))
out = {}
for name, fns in (("D2 fwd+bwd", conv), ("train small", [step])):
    for fn in fns:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for fn in fns:
            fn()
        times.append(time.perf_counter() - t)
    out[name] = times
print(json.dumps(out))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", action="store_true", help="run a busy loop beside the measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    settings = {"1 thread": (1, 1, "adapt"), "2 threads": (2, 2, "adapt"), "2 threads, BLAS 1": (2, 1, "adapt"),
                "2 threads, BLAS 1, fixed": (2, 1, "fixed")}
    samples = {s: {} for s in settings}
    try:
        for _ in range(args.rounds):
            for setting, (threads, blas, adapt) in settings.items():
                out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(blas), adapt,
                                      str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                for name, times in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    samples[setting].setdefault(name, []).extend(times)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; busy loop: {args.busy}")
    print("| what | " + " | ".join(f"{s} ms (/ 1 thread)" for s in settings) + " |")
    print("|---|" + "---:|" * len(settings))
    for name in samples["1 thread"]:
        ms = [statistics.median(samples[s][name]) * 1e3 for s in settings]
        print(f"| {name} | " + " | ".join(f"{m:.1f} ({m / ms[0]:.2f})" for m in ms) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
