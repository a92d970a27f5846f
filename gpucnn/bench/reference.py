"""The reference side of every comparison, run in its own process.

PyTorch (oneDNN on the CPU, cuDNN on the GPU) and our backends must not share
a process: the threads of one library keep spinning after its work and steal
the cores from the other (DESIGN.md, "Benchmarking notes"). The benchmark
therefore starts ``python -m gpucnn.bench.reference`` once, and the two sides
take turns: ours, then the reference, then ours again (A B A B), each side
idle while the other is timed.

Protocol: one JSON object per line. The worker first writes a greeting
(``reference``, ``library``, ``device``, versions), then answers each request
on stdin with one line on its protocol pipe (its original stdout; anything a
library prints goes to stderr instead):

- ``{"cmd": "kernel", "case": ..., "op": ..., "seed", "repeats", "warmup", "calls", "min_sample_s"}``
  -> ``{"samples": [...], "calls": n, "algorithm": "..."}``
- ``{"cmd": "train", ...}`` -> the same, per training step (``end_to_end.torch_training_step``)
- ``{"cmd": "quit"}``

Without PyTorch (or with ``--library numpy``) the worker times the NumPy
im2col + matmul baseline of ``baseline.py`` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import traceback

import numpy as np

from . import baseline
from ..cpu_threads import available_cores
from .timing import Timing, WallClock, limit_threads, measure, torch_cuda_clock
from .workload import bind_op, case_from_dict, make_inputs

LIBRARIES = ("auto", "torch", "numpy")

# Request fields that say how to time, not what to run.
TIMING_FIELDS = ("repeats", "warmup", "calls", "min_sample_s")


# --- the worker ----------------------------------------------------------------------


class TorchKernels:
    """The seven ops as ATen calls: exactly what PyTorch's autograd runs for them."""

    def __init__(self, device: str, tf32: bool = False):
        import torch
        self.torch, self.device, self.tf32 = torch, device, tf32
        if device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("reference: PyTorch sees no CUDA device")
            # cuDNN picks its fastest algorithm per shape during warm-up. TF32 would
            # compare 10-bit-mantissa math against our FP32 kernels, so it is off unless
            # ``tf32`` asks for PyTorch's defaults (TF32 convolutions), what its users get.
            torch.backends.cudnn.benchmark = True
            if not tf32:
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            self.clock = torch_cuda_clock()
        else:
            self.clock = WallClock()
        torch.set_grad_enabled(False)

    def describe(self) -> dict:
        torch = self.torch
        if self.device == "cuda":
            tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
            name = (f"torch {torch.__version__} cuDNN {torch.backends.cudnn.version()} (TF32 {tf32}) "
                    f"on {torch.cuda.get_device_name()}")
        else:
            name = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
        return {"reference": name, "library": "torch", "versions": {"torch": torch.__version__}}

    def _conv_backend(self, x, w, stride, pad, dil) -> str:
        """The convolution backend PyTorch dispatches to (Mkldnn, Slow2d, Cudnn, ...).

        Asked through a private ATen hook; where a PyTorch lacks it the record
        says "aten convolution" rather than guess.
        """
        select = getattr(self.torch._C, "_select_conv_backend", None)
        if select is None:
            return "aten convolution"
        return str(select(x, w, None, stride, pad, dil, False, [0, 0], 1, None)).rsplit(".", 1)[-1]

    def prepare(self, case, op: str, seed: int):
        """(callable running op once, the backend PyTorch selects for it)."""
        torch = self.torch
        aten = torch.ops.aten
        t = {k: torch.from_numpy(v).to(self.device) for k, v in make_inputs(case, op, seed).items()}
        g = case.geometry
        if case.family == "conv":
            stride, pad, dil = list(g.stride), list(g.pad), list(g.dilation)
            w = t["w"] if "w" in t else torch.empty(g.w_shape, device=self.device)
            x = t["x"] if "x" in t else torch.empty(g.x_shape, device=self.device)
            algorithm = self._conv_backend(x, w, stride, pad, dil)
            if op == "conv2d_forward":
                return (lambda: aten.convolution(x, w, t["b"], stride, pad, dil, False, [0, 0], 1)), algorithm
            mask = [True, False, False] if op == "conv2d_backward_data" else [False, True, False]
            return (lambda: aten.convolution_backward(t["dy"], x, w, None, stride, pad, dil,
                                                      False, [0, 0], 1, mask)), algorithm
        window, stride, pad = [g.R, g.S], list(g.stride), list(g.pad)
        if op == "max_pool2d_forward":
            return (lambda: aten.max_pool2d_with_indices(t["x"], window, stride, pad)), "aten max_pool2d_with_indices"
        if op == "max_pool2d_backward":
            _, indices = aten.max_pool2d_with_indices(t["x"], window, stride, pad)
            return (lambda: aten.max_pool2d_with_indices_backward(t["dy"], t["x"], window, stride, pad,
                                                                  [1, 1], False, indices)), \
                "aten max_pool2d_with_indices_backward"
        if op == "avg_pool2d_forward":
            return (lambda: aten.avg_pool2d(t["x"], window, stride, pad)), "aten avg_pool2d"
        if op == "avg_pool2d_backward":
            x = torch.empty(g.x_shape, device=self.device)
            return (lambda: aten.avg_pool2d_backward(t["dy"], x, window, stride, pad, False, True, None)), \
                "aten avg_pool2d_backward"
        raise ValueError(f"reference: unknown op {op!r}")


class NumpyKernels:
    """The NumPy im2col + matmul baseline (``baseline.py``) on the CPU."""

    def __init__(self, device: str):
        if device != "cpu":
            raise RuntimeError("reference: the NumPy baseline runs only on the CPU; install PyTorch "
                               "with CUDA for a GPU reference")
        self.device, self.clock = device, WallClock()

    def describe(self) -> dict:
        return {"reference": f"numpy {np.__version__} baseline", "library": "numpy",
                "versions": {"numpy": np.__version__}}

    ALGORITHMS = {"conv2d_forward": "numpy im2col+matmul", "conv2d_backward_data": "numpy matmul+col2im",
                  "conv2d_backward_filter": "numpy im2col+matmul", "max_pool2d_backward": "numpy bincount"}

    def prepare(self, case, op: str, seed: int):
        a, g = make_inputs(case, op, seed), case.geometry
        if op == "max_pool2d_backward":
            a["argmax"] = baseline.max_pool2d_forward(a["x"], g)[1]
        return bind_op(baseline, op, a, g), self.ALGORITHMS.get(op, "numpy window views")


def _kernels(library: str, device: str, tf32: bool = False):
    if library in ("auto", "torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            if library == "torch":
                raise
        else:
            return TorchKernels(device, tf32)
    return NumpyKernels(device)


def serve(library: str, device: str, requests, reply, threads: int | None = None, tf32: bool = False) -> None:
    """Answer ``requests`` (an iterable of JSON lines) through ``reply(dict)`` until "quit".

    ``threads`` limits the worker's thread pools (see ``timing.limit_threads``);
    ``tf32`` keeps PyTorch's default TF32 convolutions on a GPU (else FP32).
    """
    with contextlib.ExitStack() as stack:
        try:
            kernels = _kernels(library, device, tf32)
            # None: every core (gpucnn's import-time default of one thread is for training)
            limited = stack.enter_context(limit_threads(threads or available_cores()))
        except Exception as err:  # no torch, no GPU: the client reports it
            reply({"error": f"{type(err).__name__}: {err}"})
            return
        reply({**kernels.describe(), "device": device, "threads": limited})
        _answer(kernels, requests, reply)


def _answer(kernels, requests, reply) -> None:
    """The request loop of ``serve``."""
    prepared = {}
    for line in requests:
        request = json.loads(line)
        cmd = request.get("cmd")
        if cmd == "quit":
            return
        try:
            # The rounds of one comparison reuse the tensors (and the model and optimizer state).
            what = {k: v for k, v in request.items() if k not in TIMING_FIELDS}
            key = json.dumps(what, sort_keys=True)
            if key not in prepared:
                prepared.clear()  # keep only one case's tensors alive
                if cmd == "kernel":
                    prepared[key] = kernels.prepare(case_from_dict(what["case"]), what["op"], what["seed"])
                elif cmd == "train":
                    from .end_to_end import torch_training_step
                    prepared[key] = torch_training_step(kernels, what)
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            fn, algorithm = prepared[key]
            timing = measure(fn, kernels.clock, request["repeats"], request.get("warmup", 1),
                             request.get("min_sample_s", 1e-3), request.get("calls"))
            reply({"samples": timing.samples, "calls": timing.calls, "algorithm": algorithm})
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            reply({"error": f"{type(err).__name__}: {err}"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpucnn.bench.reference",
                                     description="Reference timing worker of gpucnn bench (JSON lines).")
    parser.add_argument("--library", choices=LIBRARIES, default="auto")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="limit the thread pools to this many")
    parser.add_argument("--tf32", action="store_true", help="keep PyTorch's default TF32 on a GPU (else off)")
    args = parser.parse_args(argv)
    # The protocol owns the original stdout; whatever a library prints goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    serve(args.library, args.device, sys.stdin, reply, args.threads, args.tf32)
    return 0


# --- the client ------------------------------------------------------------------------


class ReferenceProcess:
    """A running reference worker. Start it early: its imports overlap our own warm-up.

    ``info`` waits for the greeting; ``time_kernel`` and ``time_training``
    return a ``Timing`` and the algorithm the reference used. Use as a
    context manager, or call ``close()``.
    """

    def __init__(self, device: str = "cpu", library: str = "auto", threads: int | None = None,
                 tf32: bool = False):
        if library not in LIBRARIES:
            raise ValueError(f"bench: unknown reference library {library!r}; known: {', '.join(LIBRARIES)}")
        self.device, self.library = device, library
        options = ([] if threads is None else ["--threads", str(threads)]) + (["--tf32"] if tf32 else [])
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gpucnn.bench.reference", "--library", library, "--device", device, *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._info = None

    def _receive(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise RuntimeError(f"bench: the reference worker exited (status {code}) without answering; "
                               f"see its messages above")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"bench reference ({self.library} on {self.device}): {message['error']}")
        return message

    @property
    def info(self) -> dict:
        """The greeting: ``reference`` (a name with versions), ``library``, ``device``, ``versions``, ``threads``."""
        if self._info is None:
            self._info = self._receive()
        return self._info

    def _request(self, message: dict) -> tuple[Timing, str]:
        self.info  # noqa: B018 -- the greeting comes first
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except OSError as err:  # the worker has died
            raise RuntimeError(f"bench: the reference worker is gone ({err})") from err
        answer = self._receive()
        return Timing(answer["samples"], answer["calls"]), answer["algorithm"]

    def time_kernel(self, case_dict: dict, op: str, repeats: int, warmup: int = 1,
                    calls: int | None = None, min_sample_s: float = 1e-3, seed: int = 0):
        """(Timing, algorithm) of the reference's ``op`` on the case (``workload.case_to_dict``)."""
        return self._request({"cmd": "kernel", "case": case_dict, "op": op, "seed": seed,
                              "repeats": repeats, "warmup": warmup, "calls": calls,
                              "min_sample_s": min_sample_s})

    def time_training(self, spec: dict, repeats: int, warmup: int = 1, calls: int | None = None):
        """(Timing, description) of one PyTorch training step on ``spec`` (see ``end_to_end``)."""
        return self._request({"cmd": "train", **spec, "repeats": repeats, "warmup": warmup,
                              "calls": calls, "min_sample_s": 0.0})

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    sys.exit(main())
