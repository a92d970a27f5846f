"""The MPI communicator (``mpi4py``): NumPy arrays directly, CuPy arrays through the host or a CUDA-aware MPI.

Every collective is started non-blocking (``Iallreduce``, ``Ibcast``,
``Ibarrier``, ``Iallgather``) and polled against the communicator's timeout,
so a rank that died or stalled ends the job with a message instead of a hang.
"""

from __future__ import annotations

import pickle

import numpy as np

from .base import (DEFAULT_TIMEOUT, Communicator, check_buffer, check_op, check_timeout, end_job,
                   is_device_array, wait_until)

MPI_HINT = "pip install mpi4py mpich (an MPI of its own), or pip install mpi4py against a cluster's MPI"


def import_mpi():
    """``mpi4py.MPI``, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(f"gpucnn.distributed needs mpi4py ({err}); {MPI_HINT}") from None
    return MPI


class MPICommunicator(Communicator):
    """A communicator over an ``mpi4py`` communicator (default ``MPI.COMM_WORLD``).

    CuPy arrays are copied to the host, reduced and copied back, unless
    ``cuda_aware=True`` says the MPI library reads GPU memory itself (mpi4py
    passes it the device pointer). ``timeout``: seconds any collective may wait.
    """

    name = "MPI"

    def __init__(self, comm=None, timeout: float = DEFAULT_TIMEOUT, cuda_aware: bool = False):
        self._mpi = import_mpi()
        self.comm = self._mpi.COMM_WORLD if comm is None else comm
        self.timeout = check_timeout(timeout)
        self.cuda_aware = bool(cuda_aware)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # The ranks that share this machine's memory, numbered from 0: one GPU each.
        local = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = local.Get_rank()
        local.Free()
        self._ops = {"sum": self._mpi.SUM, "max": self._mpi.MAX, "min": self._mpi.MIN}
        self._calls = 0  # collectives started, to say which one timed out

    # --- collectives -----------------------------------------------------------------------

    def allreduce(self, array, op: str = "sum"):
        check_buffer(array, "allreduce")
        mpi_op = self._ops[check_op(op)]
        with self._staged(array) as buffer:
            self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=mpi_op),
                       f"allreduce of {buffer.size} {buffer.dtype} values")
        return array

    def broadcast(self, array, root: int = 0):
        check_buffer(array, "broadcast")
        self._check_root(root)
        with self._staged(array) as buffer:
            self._wait(self.comm.Ibcast(buffer, root=root),
                       f"broadcast of {buffer.size} {buffer.dtype} values from rank {root}")
        return array

    def barrier(self) -> None:
        self._wait(self.comm.Ibarrier(), "barrier")

    def allgather_object(self, obj) -> list:
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        sizes = np.empty(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes),
                   "allgather_object (sizes)")
        gathered = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._wait(self.comm.Iallgatherv(data, [gathered, (sizes, offsets), self._mpi.BYTE]),
                   "allgather_object")
        # The bytes come from the ranks of this very job, which run our own code.
        return [pickle.loads(gathered[o:o + s].tobytes()) for o, s in zip(offsets, sizes)]

    def abort(self, message: str, status: int = 1) -> None:
        end_job(f"rank {self.rank} of {self.size}: {message}", status, self.comm.Abort)

    # --- helpers ---------------------------------------------------------------------------

    def _wait(self, request, what: str) -> None:
        """Complete ``request`` within the timeout, or end the job with a message naming this rank."""
        self._calls += 1
        call = self._calls

        def done():
            try:
                return request.Test()
            except self._mpi.Exception as err:  # a peer's failure, reported by the library
                self.abort(f"{what} (collective #{call}) failed: {err}")

        wait_until(done, self.timeout, lambda: self.abort(
            f"{what} (collective #{call}) waited more than {self.timeout:g} s for the other ranks; "
            f"one of them has died or stalled, so the job is ended"))

    def _check_root(self, root) -> None:
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < self.size:
            raise ValueError(f"gpucnn.distributed.broadcast: root must be a rank in 0..{self.size - 1}, "
                             f"got {root!r}")

    def _staged(self, array):
        """A context giving the buffer MPI reads and writes: the array itself, or a host copy of a GPU array."""
        return _HostStaging(array) if is_device_array(array) and not self.cuda_aware else _Direct(array)


class _Direct:
    """The array itself is the MPI buffer (host arrays; GPU arrays with a CUDA-aware MPI)."""

    def __init__(self, array):
        self.array = array

    def __enter__(self):
        if is_device_array(self.array):
            # MPI reads the memory outside CuPy's stream: the kernels that write it must be done.
            import cupy
            cupy.cuda.get_current_stream().synchronize()
        return self.array

    def __exit__(self, *exc):
        return False


class _HostStaging:
    """A host copy of a GPU array for MPI to use, copied back into the array when the collective is done."""

    def __init__(self, array):
        self.array = array

    def __enter__(self):
        self.host = np.ascontiguousarray(self.array.get())
        return self.host

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.array.set(self.host)
        return False
