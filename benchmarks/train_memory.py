"""Peak memory of a CPU training step: gpucnn against PyTorch, each in a fresh process.

    python benchmarks/train_memory.py [--model small] [--batch 128] [--steps 3] [--threads N]

Each side runs in its own new Python process: imports, builds the model of
``gpucnn.bench.end_to_end`` (PyTorch builds the same architecture from our
configuration), runs ``--steps`` training steps, and reports the process's
peak resident set (``ru_maxrss``), with the peak after the imports alone
for scale. Prints one line per side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import contextlib, importlib.util, json, resource, sys
side, path, threads = sys.argv[1], sys.argv[2], sys.argv[3]
spec = json.loads(sys.stdin.read())
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if side == "torch":
    # Only PyTorch and the bench's end_to_end module (loaded from its file, without gpucnn).
    import torch
    loader = importlib.util.spec_from_file_location("end_to_end", path)
    end_to_end = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(end_to_end)
    if threads != "default":
        torch.set_num_threads(int(threads))
    kernels = type("Kernels", (), {"torch": torch, "device": "cpu"})()
    imports = peak()
    step, _ = end_to_end.torch_training_step(kernels, spec)
else:
    import gpucnn
    from gpucnn.bench import end_to_end
    from gpucnn.bench.timing import limit_threads
    if threads != "default":
        contextlib.ExitStack().enter_context(limit_threads(int(threads)))
    imports = peak()
    step = end_to_end.gpucnn_training_step(gpucnn.get_backend("cpu"), spec)
for _ in range(spec["steps"]):
    step()
print(json.dumps({"side": side, "peak_mib": peak(), "after_imports_mib": imports}))
"""


def measure(side: str, spec: dict, threads: str) -> dict:
    """Peak RSS (MiB) of a fresh process running ``spec["steps"]`` training steps on ``side``
    ("gpucnn" or "torch"), and its peak after the imports."""
    from gpucnn.bench import end_to_end
    out = subprocess.run([sys.executable, "-c", CHILD, side, end_to_end.__file__, threads],
                         input=json.dumps(spec), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", default="default", help="threads per side (default: each library's default)")
    args = parser.parse_args(argv)
    from gpucnn.bench import end_to_end
    spec = dict(end_to_end.training_spec(args.model, args.batch), steps=args.steps)
    for side in ("gpucnn", "torch"):
        r = measure(side, spec, args.threads)
        print(f"{side:7s} peak {r['peak_mib']:7.1f} MiB (after imports {r['after_imports_mib']:6.1f} MiB), "
              f"{args.model} batch {args.batch}, {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
