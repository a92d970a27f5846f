"""The ``cpu`` backend's threads: a batch's work items shared among a few Python threads.

``parallel(count, task)`` runs ``task(items)`` on ``threads()`` threads at
once (the calling thread is one of them); ``items`` is one iterator over
``range(count)`` that all of them draw from, so a thread that the scheduler
parks simply takes fewer items and no thread waits for a fixed share of the
work. The tasks spend their time in Numba kernels compiled ``nogil=True`` and
in NumPy's BLAS, both of which release the GIL, so the threads run on
separate cores.

BLAS is held at one thread inside ``parallel``: each of our threads is a
BLAS caller of its own, and a multi-threaded GEMM inside each would put more
threads than cores on the machine (OpenBLAS's idle threads spin, and a GEMM
split over two threads waits for both, many times per op). Nothing spins
here: an idle pool thread sleeps on a queue. "BLAS" is every BLAS library
loaded: NumPy's, and SciPy's, which the convolution kernels' ``np.dot``
calls (Numba binds it through ``scipy.linalg.cython_blas``). This module
loads SciPy's before anything looks the libraries up, and applies the
thread setting to it, since Numba would load it only at a kernel's first
compilation, inside a ``parallel`` call.

How many threads: gpucnn's one thread setting (``gpucnn.set_threads``,
``GPUCNN_THREADS``; one by default), less the cores that other work is
running on at the moment of the call (Linux: the count of runnable threads
in ``/proc/loadavg``), as GNU OpenMP's dynamic mode does with the load
average. A fork-join call split over a core that another process also
runs on waits for the share that core's thread took: measured on the
2-core machine of ``benchmarks/RESULTS.md`` (CPU-speed session), two fixed
threads beside a busy process made the training step 1.3x slower than one.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS of the kernels' np.dot: see above)

from ..cpu_threads import apply_again, available_cores, get_threads

# Whether threads() gives up the cores other work is running on (tests turn it off for a fixed count).
ADAPT_TO_LOAD = True

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_blas = None  # threadpoolctl's controllers of the BLAS libraries loaded (NumPy's, SciPy's), found once

apply_again()  # the thread setting, to SciPy's BLAS loaded above


def _blas_controllers():
    """threadpoolctl's controllers of the BLAS libraries loaded now (looked up once: it walks every loaded library)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


def threads() -> int:
    """Threads the next ``parallel`` call uses: ``gpucnn.get_threads()``, less the cores busy with other work."""
    n = get_threads()
    if n > 1 and ADAPT_TO_LOAD:
        n = max(1, min(n, available_cores() - _others_running()))
    return n


def _others_running() -> int:
    """Threads runnable right now besides the calling one, system-wide (Linux); 0 where unknown."""
    try:
        with open("/proc/loadavg") as f:
            return max(0, runnable_in_loadavg(f.read()) - 1)
    except (OSError, ValueError, IndexError):
        return 0


def runnable_in_loadavg(text: str) -> int:
    """The runnable-thread count in a ``/proc/loadavg`` line: 2 in ``"0.52 0.58 0.59 2/345 12345"``."""
    return int(text.split()[3].split("/")[0])


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS at one thread inside the block, its previous setting after it.

    Also for a backend op's small serial GEMMs outside ``parallel`` (Winograd's filter
    transforms): at two threads OpenBLAS wakes its worker for them, which then spins
    runnable for a while, and ``threads()`` reading that in ``/proc/loadavg`` gave the
    next ``parallel`` call one thread (R1's forward ran 1.6x slower).
    """
    libs = _blas_controllers()
    saved = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, saved):
            lib.set_num_threads(n)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's executor with at least ``workers`` threads (grown, never shrunk, on demand)."""
    global _executor, _executor_size
    with _lock:
        if _executor is None or _executor_size < workers:
            if _executor is not None:
                _executor.shutdown(wait=True)
            _executor = ThreadPoolExecutor(workers, thread_name_prefix="gpucnn-cpu")
            _executor_size = workers
        return _executor


class _SharedRange:
    """An iterator over ``range(count)`` that several threads can draw from: each index comes out once.

    ``itertools.count.__next__`` runs in C under the GIL, so two threads never get the same index.
    """

    def __init__(self, count: int):
        self._next, self._count = itertools.count().__next__, count

    def __iter__(self):
        return self

    def __next__(self) -> int:
        i = self._next()
        if i >= self._count:
            raise StopIteration
        return i


def parallel(count: int, task) -> list:
    """Run ``task(items)`` on up to ``threads()`` threads, ``items`` drawing from ``range(count)``,
    with BLAS at one thread.

    Every index in ``range(count)`` is handed to exactly one call; a task
    returns whatever it accumulated over its items (or None). Returns the
    results of the calls that ran (one per thread, at most ``count``), the
    calling thread's first. An exception in any call is raised here after
    every thread has finished.
    """
    n_threads = max(1, min(threads(), count))
    with single_threaded_blas():
        if n_threads == 1:
            return [task(range(count))]
        items = _SharedRange(count)
        futures = [_pool(n_threads - 1).submit(task, items) for _ in range(n_threads - 1)]
        try:
            results = [task(items)]
        finally:
            # The others write into the caller's arrays: wait for them even when this call failed.
            others = [f.exception() for f in futures]
        for error in others:
            if error is not None:
                raise error
        return results + [f.result() for f in futures]


# --- what the threads work on: chunks of a batch, and their own scratch buffers ---

_scratch = threading.local()


def thread_buffer(name: str, shape: tuple, dtype) -> np.ndarray:
    """A C-contiguous ``shape`` view of this thread's buffer ``name``, grown (never shrunk) on demand.

    Reused across calls: a training step calls every layer's convolution once
    per step, and a fresh buffer per call would page-fault its way into memory
    again. One buffer per name and thread, as large as the largest use so far.
    """
    buffers = _scratch.__dict__.setdefault("buffers", {})
    size = math.prod(shape)  # not np.prod: 5 us a call, paid per chunk
    buf = buffers.get(name)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = buffers[name] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


# The number of chunks a batch is cut into is rounded up to a multiple of this:
# with 13 chunks two threads do 7 and 6, and the call waits for the seventh
# (a whole chunk, 1/13 of the work, with one core idle); with a multiple of
# 2, 4 and 8 the usual thread counts share them evenly.
CHUNK_COUNT_MULTIPLE = 8


def even_chunk_size(batch: int, max_size: int) -> int:
    """Items per chunk, at most ``max_size``, cutting ``batch`` items into a number of chunks that is
    a multiple of ``CHUNK_COUNT_MULTIPLE`` where the batch allows: 64 images of at most 5 per chunk
    make 16 chunks of 4, not 13 of 5. A function of its arguments alone (never of the thread count:
    sums per chunk decide the rounding)."""
    count = -(-batch // max(1, max_size))
    count = min(batch, -(-count // CHUNK_COUNT_MULTIPLE) * CHUNK_COUNT_MULTIPLE)
    return max(1, -(-batch // count))


class Chunks:
    """A batch of ``batch`` images (or items) cut into ``count`` chunks of ``size`` (the last may be
    shorter), numbered from 0, for the backend's threads to share."""

    def __init__(self, batch: int, size: int):
        self.batch, self.size = batch, size
        self.count = -(-batch // size)

    def run(self, work) -> None:
        """Call ``work(chunk, images)`` for every chunk (``images`` a range), the chunks shared among
        the backend's threads; each thread takes the next chunk when it is done with one."""
        def task(items):
            for i in items:
                work(i, range(i * self.size, min(self.batch, (i + 1) * self.size)))

        parallel(self.count, task)

    def spans(self, kernel, *args) -> None:
        """``kernel(*args, start, stop)`` for every chunk: an elementwise kernel on its span of flat arrays."""
        self.run(lambda chunk, items: kernel(*args, items.start, items.stop))

    def slices(self, kernel, *arrays) -> None:
        """``kernel(*(a[images] for a in arrays))`` for every chunk: a per-image kernel on the
        chunk's slices (C-contiguous views of C-contiguous arrays)."""
        self.run(lambda chunk, images: kernel(*(a[images.start:images.stop] for a in arrays)))
