"""Median-of-repeats timers: wall clock on the CPU, CUDA events on the GPU.

A *sample* times ``calls`` back-to-back calls of a function and divides by
``calls``. ``calls`` is chosen once per function (``calibrate``) so a sample
lasts at least ``min_sample_s``: on the GPU that puts enough launches between
two events that launch overhead and event resolution (about 0.5 us) do not
dominate a microsecond kernel; on the CPU it keeps ``perf_counter``'s
resolution and Python's call overhead out of short ops. The result is the
median of the samples, taken after warm-up calls (JIT compilation, cuDNN
autotuning and allocator growth all happen there).

The same code times our backends in the main process and PyTorch in the
reference process; only the clock differs.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass, field

from ..cpu_threads import threads as cpu_threads


@dataclass
class Timing:
    """Seconds per call: every sample, and the number of calls each sample averaged."""

    samples: list = field(default_factory=list)
    calls: int = 1

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    @property
    def min_s(self) -> float:
        return min(self.samples)

    def merge(self, other: "Timing") -> "Timing":
        """Samples of both (taken with the same ``calls``), e.g. the rounds of an A B A B comparison."""
        return Timing(self.samples + other.samples, self.calls)


class WallClock:
    """Host wall clock (``time.perf_counter``) around the calls; ``synchronize`` ends device work first."""

    name = "perf_counter"

    def __init__(self, synchronize=None):
        self.synchronize = synchronize or (lambda: None)

    def interval(self, fn, calls: int) -> float:
        """Seconds for ``calls`` calls of ``fn``, finished work included."""
        self.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        self.synchronize()
        return time.perf_counter() - start


class CudaEventClock:
    """CUDA events recorded on the current stream before and after the calls.

    ``event`` makes a timing event with ``record()``, ``synchronize()``; ``elapsed_ms(a, b)``
    reads the time between two (CuPy and PyTorch spell these differently, see
    ``cupy_clock`` and ``torch_cuda_clock``). Only the stop event is waited
    for, so the host launches all ``calls`` without stalling between them.
    """

    name = "cuda-events"

    def __init__(self, event, elapsed_ms):
        self.event, self.elapsed_ms = event, elapsed_ms

    def interval(self, fn, calls: int) -> float:
        start, stop = self.event(), self.event()
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        return self.elapsed_ms(start, stop) / 1e3


def cupy_clock() -> CudaEventClock:
    """Events of CuPy's current device and stream."""
    import cupy
    return CudaEventClock(cupy.cuda.Event, cupy.cuda.get_elapsed_time)


def torch_cuda_clock() -> CudaEventClock:
    """Events of PyTorch's current CUDA stream."""
    import torch
    return CudaEventClock(lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b))


def calibrate(fn, clock, min_sample_s: float, max_calls: int = 10_000) -> int:
    """Calls per sample so that one sample lasts about ``min_sample_s`` (at least one call).

    Times one call, then a batch grown tenfold until it is long enough to
    extrapolate from.
    """
    calls = 1
    while True:
        t = clock.interval(fn, calls)
        if t >= min_sample_s or calls >= max_calls:
            return calls
        if t >= min_sample_s / 10:
            return min(max_calls, math.ceil(calls * min_sample_s / t))
        calls = min(max_calls, calls * 10)


def measure(fn, clock, repeats: int, warmup: int = 1, min_sample_s: float = 1e-3,
            calls: int | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times, then ``repeats`` samples of ``calls`` calls each.

    ``calls`` defaults to ``calibrate(fn, clock, min_sample_s)``; pass the
    value from an earlier round to keep the rounds of one comparison alike.
    Returns seconds per call for every sample.
    """
    if repeats < 1:
        raise ValueError(f"measure: repeats must be positive, got {repeats}")
    for _ in range(warmup):
        clock.interval(fn, 1)
    if calls is None:
        calls = calibrate(fn, clock, min_sample_s)
    return Timing([clock.interval(fn, calls) / calls for _ in range(repeats)], calls)



@contextlib.contextmanager
def limit_threads(threads: int):
    """Within the block, run Numba, BLAS/OpenMP (and PyTorch, if imported) with ``threads`` threads.

    On a machine shared with other work, one thread per side gives far
    steadier times than a parallel region that waits for a descheduled
    thread; the peak is then that of ``threads`` cores. Yields what was
    limited, for the report; the previous setting returns on exit
    (``gpucnn.threads``, which sets every pool).
    """
    if threads < 1:
        raise ValueError(f"limit_threads: threads must be positive, got {threads}")
    import numba

    with cpu_threads(threads):  # gpucnn's one switch for all of these pools
        limited = [f"numba {numba.get_num_threads()}", f"BLAS/OpenMP {threads}"]
        if "torch" in sys.modules:
            limited.append(f"torch {threads}")
        yield ", ".join(limited)
