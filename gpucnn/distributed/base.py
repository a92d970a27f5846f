"""What every communicator offers, and the deadline that keeps a collective from waiting forever.

A communicator joins the ``size`` processes (ranks) of one job. The Trainer
talks only to this interface; MPI (``mpi.py``) and NCCL (``nccl.py``) are
its implementations.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for the other ranks before the job is ended

REDUCE_OPS = ("sum", "max", "min")


class Communicator:
    """The collectives data-parallel training needs, on the arrays of any gpucnn backend.

    Attributes: ``rank`` (0 .. size-1), ``size`` (ranks in the job),
    ``local_rank`` (rank among the processes of this machine: it picks the
    GPU), ``timeout`` (seconds a collective waits before it ends the job).
    Every collective must be called by every rank, in the same order.
    """

    rank: int
    size: int
    local_rank: int
    timeout: float
    name: str  # how ``repr`` and error messages call the transport, e.g. "MPI" or "NCCL"

    def allreduce(self, array, op: str = "sum"):
        """Reduce ``array`` (any shape, C-contiguous, NumPy or CuPy) over all ranks, in place; returns it."""
        raise NotImplementedError

    def broadcast(self, array, root: int = 0):
        """Overwrite ``array`` on every rank with rank ``root``'s, in place; returns it."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Return once every rank has called it."""
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank, for small picklable metadata."""
        raise NotImplementedError

    def abort(self, message: str, status: int = 1) -> None:
        """Print ``message`` (naming this rank) to stderr and end every process of the job."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


def check_timeout(timeout) -> float:
    """``timeout`` as a positive float of seconds, or a ValueError naming it."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"gpucnn.distributed: timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def check_op(op: str) -> str:
    if op not in REDUCE_OPS:
        raise ValueError(f"gpucnn.distributed: allreduce op must be one of {REDUCE_OPS}, got {op!r}")
    return op


def check_buffer(array, what: str):
    """Refuse arrays a collective cannot fill in place: not C-contiguous, or not an array at all."""
    flags = getattr(array, "flags", None)
    if flags is None or not hasattr(array, "dtype"):
        raise TypeError(f"gpucnn.distributed.{what}: expected a NumPy or CuPy array, got {type(array).__name__}")
    if not flags.c_contiguous:
        raise ValueError(f"gpucnn.distributed.{what}: the array of shape {tuple(array.shape)} must be "
                         f"C-contiguous (the collective writes into its memory)")
    return array


def is_device_array(array) -> bool:
    """Whether ``array`` lives on a GPU (a CuPy array), without importing CuPy."""
    return hasattr(array, "__cuda_array_interface__")


def wait_until(done, timeout: float, on_timeout) -> None:
    """Poll ``done()`` until it is true; call ``on_timeout()`` (which ends the process) past ``timeout`` s.

    A blocking collective would wait forever for a rank that died; polling a
    non-blocking one lets us give up. The pause between polls grows to 1 ms so
    a long wait does not take a core from the work of this machine's other ranks.
    """
    deadline = time.monotonic() + timeout
    pause = 0.0
    while not done():
        if time.monotonic() > deadline:
            on_timeout()
        time.sleep(pause)
        pause = min(2 * pause or 1e-6, 1e-3)


def end_job(message: str, status: int, abort) -> None:
    """Print ``message`` as the last words of this rank, call the library's ``abort(status)``, then exit.

    ``MPI_Abort`` asks the process manager to end every rank; MPICH may return
    from it before this process is gone, so we leave at once ourselves too.
    """
    report(message)
    try:
        abort(status)
    finally:
        os._exit(status)


def report(message: str) -> None:
    """The last words of a rank before the job is ended: one line on stderr."""
    print(f"gpucnn.distributed: error: {message}", file=sys.stderr, flush=True)
