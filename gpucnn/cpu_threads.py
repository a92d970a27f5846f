"""How many CPU threads gpucnn's computations use: one setting for BLAS, OpenMP, Numba (and PyTorch).

    import gpucnn as gc
    gc.set_threads(4)          # from now on
    with gc.threads(1):        # inside the block only
        trainer.fit(...)
    gc.get_threads()           # the current setting

The setting reaches every thread pool a CPU computation of gpucnn can run on:
the BLAS and OpenMP libraries loaded in the process (through threadpoolctl),
Numba's parallel regions, and PyTorch's pool when PyTorch has been imported
(the bench's references); none of these is imported here for its own sake,
except Numba, which the cpu backend loads anyway.

The default, set when gpucnn is imported, is ``DEFAULT_THREADS`` = 1 unless
the environment variable ``GPUCNN_THREADS`` says otherwise (0 = all cores).
Why one: the CPU work of the images gpucnn is used on (8x8 digits, 32x32
shapes, jet images) is many small GEMMs, and a BLAS call with two threads
must wait for both. On a machine whose cores are busy with anything else
the second thread is often descheduled, and every call waits a scheduler
time slice for it. Measured (the README's digits CNN, 3 epochs, Intel Xeon
2-core KVM guest at load average 9-11 from other jobs, each setting in its
own process, A B A B): 1 thread 3.8 / 3.2 s, 2 threads 39.0 / 56.8 s. A
single thread can lose at most the cores it leaves idle; more threads than
free cores lose 10x and more, so one thread is the default that is never
the pathological case; ``set_threads(0)`` asks for every core.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .arguments import as_int

DEFAULT_THREADS = 1
ENVIRONMENT_VARIABLE = "GPUCNN_THREADS"

_current = DEFAULT_THREADS  # what the last set_threads applied (gpucnn's import applies the default)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def set_threads(n: int) -> int:
    """Use ``n`` threads in BLAS, OpenMP, Numba and (if imported) PyTorch; ``n = 0``: all cores.

    Applies to the libraries loaded now and stays until the next call (or the
    end of a ``threads`` block). Returns the number of threads set. Raises
    TypeError for a non-integer and ValueError for a negative ``n``.
    """
    global _current
    n = as_int(n, "n", "gpucnn.set_threads", minimum=0) or available_cores()
    import numba
    from threadpoolctl import threadpool_limits

    # Numba first: its first set_num_threads loads its threading layer (GNU OpenMP
    # here), which the limits below must then find loaded.
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=n)  # every BLAS and OpenMP library loaded in the process
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    _current = n
    return n


def get_threads() -> int:
    """The number of threads the last ``set_threads`` (or the import-time default) applied."""
    return _current


@contextmanager
def threads(n: int):
    """``with gc.threads(n):`` -- ``set_threads(n)`` inside the block, the previous setting after it
    (also when the block raises). Yields the number of threads set."""
    previous = get_threads()
    try:
        yield set_threads(n)
    finally:
        set_threads(previous)


def default_threads() -> int:
    """``GPUCNN_THREADS`` from the environment when set (0 = all cores), else ``DEFAULT_THREADS``."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_THREADS
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"the environment variable {ENVIRONMENT_VARIABLE}={value!r} must be a number "
                         f"of threads >= 0 (0 = all cores)")
    return number
