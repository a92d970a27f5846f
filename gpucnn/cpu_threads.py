"""How many CPU threads gpucnn's computations use: one setting for BLAS, OpenMP, Numba (and PyTorch).

    import gpucnn as gc
    gc.set_threads(4)          # from now on
    with gc.threads(1):        # inside the block only
        trainer.fit(...)
    gc.get_threads()           # the current setting

The setting reaches every thread pool a CPU computation of gpucnn can run on:
the BLAS and OpenMP libraries loaded in the process (through threadpoolctl),
Numba's parallel regions, and PyTorch's pool when PyTorch has been imported
(the bench's references). Numba needs care: setting its thread count starts
its threading layer (GNU OpenMP here), after which a ``fork()``ed child that
runs Numba parallel code is killed ("fork() called from a process already
using GNU OpenMP"). gpucnn's own Numba kernels are serial and never start it,
so the import-time default leaves a Numba that is not running alone (and does
not import it); ``set_threads`` called by the user, the command line or a
``threads`` block sets Numba too.

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
    return _apply(as_int(n, "n", "gpucnn.set_threads", minimum=0), start_numba=True)


def apply_default() -> int:
    """Apply ``default_threads()`` without starting Numba's threading layer (see the module's notes);
    what ``import gpucnn`` runs. Returns the number of threads set."""
    return _apply(default_threads(), start_numba=False)


def apply_again() -> int:
    """Apply the current setting again, to the libraries loaded since it was set (the cpu
    backend loads SciPy's BLAS, which its Numba kernels call); Numba's only if it runs.
    Returns the number of threads set."""
    return _apply(_current, start_numba=False)


def _apply(n: int, start_numba: bool) -> int:
    """Set every pool to ``n`` threads (0: all cores); Numba's only if it runs or ``start_numba``."""
    global _current
    n = n or available_cores()
    if start_numba or _numba_started():
        import numba

        # Before the limits below: Numba's first set_num_threads loads its
        # threading layer (an OpenMP library), which they must then find loaded.
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)  # every BLAS and OpenMP library loaded in the process
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    _current = n
    return n


def _numba_started() -> bool:
    """Whether Numba's threading layer is loaded (a parallel region ran, or its thread count was set)."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(parallel, "_is_initialized", False))


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
